#!/usr/bin/env bash
# Builds the C core for aarch64 (where only the portable ref kernels exist), runs it under
# qemu-aarch64 on the test fixtures, and checks its raw logits bitwise against the same driver
# built for x86 without the x86 kernels, and against the Python package's own logits.
#
#   csrc/cross/run.sh [FIXTURE...]     # default: qwen3-tiny gemma-tiny mxbai-tiny mistral-tiny-window
#
# Every dtype must match everywhere: the package at its ref level and at the level this CPU gets,
# the x86 build without the x86 kernels and the aarch64 build; bfloat16 at the amx level excepted
# (the tiles sum in their own order). Needs the built extension, the
# fixtures ($CROSSRANK_FIXTURES, default tests/.fixtures), gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross and qemu-user (Debian 12).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
FIXTURES="${CROSSRANK_FIXTURES:-$ROOT/tests/.fixtures}"
OUT="${CROSSRANK_CROSS_OUT:-$ROOT/build/cross}"
mkdir -p "$OUT"
[ "$#" -gt 0 ] || set -- qwen3-tiny gemma-tiny mxbai-tiny mistral-tiny-window

# The engine library's sources and flags as setup.py builds them off x86: no CPython glue, none of
# the files that take ISA flags, no CR_X86. Its own definitions are run, so the two cannot drift.
mapfile -t BUILD < <("$PYTHON" - <<'PY'
import ast
tree = ast.parse(open("setup.py").read())
wanted = {"KERNEL_FLAGS", "kernel_flags", "compile_args", "GLUE", "engine_sources"}
defs = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
        or getattr(n, "name", None) in wanted
        or isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) in wanted]
ns = {}
exec(compile(ast.Module(defs, type_ignores=[]), "setup.py", "exec"), ns)
print(" ".join(ns["compile_args"] + ["-D_GNU_SOURCE"]))  # its one macro besides CR_X86 and NumPy's
print(" ".join(f for f in ns["engine_sources"] if ns["kernel_flags"](f) is None))
PY
)
read -ra FLAGS <<<"${BUILD[0]}"
read -ra SOURCES <<<"${BUILD[1]}"
build() {  # build CC OUTPUT [EXTRA...]
    local cc="$1" out="$2"; shift 2
    "$cc" "${FLAGS[@]}" "$@" -Icsrc -o "$out" csrc/cross/driver.c "${SOURCES[@]}" -lm
}
build gcc "$OUT/driver-x86-ref" & native=$!
build aarch64-linux-gnu-gcc "$OUT/driver-aarch64" -static
wait $native
echo "built from ${#SOURCES[@]} engine sources: $(basename -a "${SOURCES[@]}" | tr '\n' ' ')"
for run in "$OUT/driver-x86-ref:x86_64 ref" "qemu-aarch64 $OUT/driver-aarch64:aarch64 ref"; do
    got="$(${run%%:*} --isa)"
    [ "$got" = "${run##*:}" ] || { echo "${run%%:*}: built for and running '$got', not '${run##*:}'"; exit 1; }
    echo "${run%%:*}: $got"
done

check() {  # check NAME WHAT A B: files A and B are equal
    if diff -q "$3" "$4" >/dev/null; then
        echo "$1: $2 bitwise equal ($(wc -l <"$3") lines)"
    else
        echo "$1: $2 DIFFER:"; diff "$3" "$4" | sed 's/^/    /'; status=1
    fi
}
isa="$(env -u CROSSRANK_ISA "$PYTHON" -c 'import crossrank; print(crossrank.cpu_info()["isa"])')"
dtypes=(float32 bfloat16 int8)
[ "$isa" != amx ] || dtypes=(float32 int8)
status=0
for name in "$@"; do
    dir="$FIXTURES/$name" out="$OUT/$name"
    CROSSRANK_ISA=ref "$PYTHON" csrc/cross/write_spec.py "$dir" --spec "$out.spec" >"$out.python-ref"
    env -u CROSSRANK_ISA "$PYTHON" csrc/cross/write_spec.py "$dir" --dtypes "${dtypes[@]}" >"$out.python"
    "$OUT/driver-x86-ref" "$out.spec" "$dir" >"$out.x86-ref"
    qemu-aarch64 "$OUT/driver-aarch64" "$out.spec" "$dir" >"$out.aarch64"
    grep -E "^($(IFS='|'; echo "${dtypes[*]}")) " "$out.aarch64" >"$out.aarch64-$isa"
    check "$name" "aarch64 and x86 ref builds, float32/bfloat16/int8, 1 and 2 threads," "$out.x86-ref" "$out.aarch64"
    check "$name" "aarch64 build and the package at its ref level, every dtype," "$out.python-ref" "$out.aarch64"
    check "$name" "aarch64 build and the package at its $isa level, ${dtypes[*]}," "$out.python" "$out.aarch64-$isa"
done
exit $status
