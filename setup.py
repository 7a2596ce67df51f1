"""Builds crossrank's C engine and its two extension modules with plain setuptools against the
CPython and NumPy C APIs.

  crossrank_engine     the engine (csrc/*.c, csrc/kernels/*.c): a static library (build_clib),
                       compiled once and linked into both modules
  crossrank._core      the binding of the public API, csrc/crossrank.h (csrc/module.c,
                       csrc/py_*.c)
  crossrank._testing   test and benchmark hooks into the engine's internals (csrc/testing/), as
                       NumPy keeps _multiarray_tests beside its core. The wheel ships it: the kernel
                       tests can then run against an installed wheel on the CPU it was installed on
                       (which kernel tables run is that CPU's choice), for ~0.8 MB; nothing
                       in the package imports it.

Kernel files (csrc/kernels/) named ``*_avx2.c``, ``*_avxvnni.c``, ``*_avx512.c``, ``*_avx512vnni.c`` and
``*_avx512bf16.c`` and ``*_amx.c`` are the only ones compiled with ISA flags; everything else targets the
baseline, so importing on an older CPU never hits an illegal instruction (the dispatcher picks
kernels at run time).

Environment:
  CROSSRANK_BLAS=system|none             link OpenBLAS (found with pkg-config) or build without it;
                                         unset: link it when pkg-config finds it. Only the opt-in
                                         CROSSRANK_GEMM=openblas path uses it.
  CROSSRANK_SANITIZE=address,undefined   build with sanitizers (tests under ASan/UBSan)
  CROSSRANK_DEBUG=1                      -O0 -g
"""
import os
import platform
import shutil
import subprocess
from glob import glob

import numpy
from setuptools import Extension, setup
from setuptools.command.build_clib import build_clib
from setuptools.command.build_ext import build_ext
try:
    from setuptools.modified import newer_group
except ImportError:  # setuptools < 69, e.g. a venv's bundled copy under --no-build-isolation
    from distutils.dep_util import newer_group

IS_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")

# Per-file ISA flags, keyed by the file-name suffix.
KERNEL_FLAGS = {
    "_avx2.c": ["-mavx2", "-mfma", "-mf16c"],
    "_avx512.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
    "_avx512bf16.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16",
                      "-mfma", "-mf16c"],
    "_avx512vnni.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni",
                      "-mfma", "-mf16c"],
    "_avxvnni.c": ["-mavx2", "-mfma", "-mf16c", "-mavxvnni"],
    "_amx.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mamx-tile", "-mamx-bf16",
               "-mamx-int8"],
}


def kernel_flags(path):
    # csrc/kernels/ only: csrc/linear_amx.c is portable C that every build needs
    if os.path.dirname(os.path.normpath(path)) != os.path.join("csrc", "kernels"):
        return None
    for suffix, flags in KERNEL_FLAGS.items():
        if path.endswith(suffix):
            return flags
    return None


def openblas_flags():
    """(include dirs, link flags, macros) for OpenBLAS as CROSSRANK_BLAS asks, found with pkg-config.

    OpenBLAS serves only the opt-in CROSSRANK_GEMM=openblas path, so a build without it is complete:
    by default it is linked when pkg-config finds it, and left out otherwise."""
    choice = os.environ.get("CROSSRANK_BLAS", "").strip().lower() or "auto"
    if choice not in ("auto", "system", "none"):
        raise SystemExit(f"CROSSRANK_BLAS={choice!r}: use 'system' (link OpenBLAS), 'none' (build without "
                         "it) or leave it unset (link it when pkg-config finds it)")
    if choice == "none":
        return [], [], []
    found = None
    if shutil.which("pkg-config"):
        try:
            cflags = subprocess.check_output(["pkg-config", "--cflags", "openblas"], text=True,
                                             stderr=subprocess.DEVNULL).split()
            libs = subprocess.check_output(["pkg-config", "--libs", "openblas"], text=True,
                                           stderr=subprocess.DEVNULL).split()
            found = [f[2:] for f in cflags if f.startswith("-I")], libs
        except (subprocess.CalledProcessError, OSError):
            pass
    if found is None:
        if choice == "system":
            raise SystemExit("CROSSRANK_BLAS=system, but pkg-config does not find OpenBLAS: install it "
                             "(Debian/Ubuntu: apt-get install libopenblas-dev pkg-config) or unset "
                             "CROSSRANK_BLAS to build without it")
        print("crossrank: building without OpenBLAS (pkg-config does not find it); only the opt-in "
              "CROSSRANK_GEMM=openblas path needs it")
        return [], [], []
    return found[0], found[1], [("CR_HAVE_OPENBLAS", "1")]


class BuildClib(build_clib):
    """build_clib that compiles each ISA-specific kernel file with its own flags (and leaves them
    out off x86), and recompiles only the sources newer than their object or than a header."""

    def build_libraries(self, libraries):
        for name, info in libraries:
            headers = list(info.get("depends", []))
            objects = []
            for src in info["sources"]:
                flags = kernel_flags(src)
                if flags is not None and not IS_X86:
                    continue
                obj = self.compiler.object_filenames([src], output_dir=self.build_temp)[0]
                if self.force or newer_group([src] + headers, obj):
                    self.compiler.compile([src], output_dir=self.build_temp, macros=info.get("macros"),
                                          include_dirs=info.get("include_dirs"),
                                          extra_postargs=list(info.get("cflags", [])) + (flags or []))
                objects.append(obj)
            self.compiler.create_static_lib(objects, name, output_dir=self.build_clib, debug=self.debug)


class BuildExt(build_ext):
    """build_ext that builds the engine library first (so `build_ext --inplace` alone is enough)
    and relinks an extension whenever that library changed."""

    def run(self):
        if self.distribution.has_c_libraries():
            self.run_command("build_clib")
        super().run()

    def build_extension(self, ext):
        clib = self.get_finalized_command("build_clib")
        archive = os.path.join(clib.build_clib, self.compiler.library_filename(ENGINE, lib_type="static"))
        ext.depends = list(ext.depends or []) + [archive]
        super().build_extension(ext)


blas_include, blas_libs, blas_macros = openblas_flags()
# -ffp-contract=off: a*b+c stays two roundings unless the source asks for fmaf, so float32 results
# do not depend on whether the target's baseline has FMA (aarch64 does). GCC already implies it
# with -std=c11; clang contracts by default.
compile_args = ["-std=c11", "-O3", "-ffp-contract=off", "-fvisibility=hidden", "-fno-strict-aliasing",
                "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
                "-pthread"]
link_args = ["-pthread"] + blas_libs + ["-lm"]
if os.environ.get("CROSSRANK_DEBUG"):
    compile_args = [a for a in compile_args if a != "-O3"] + ["-O0", "-g"]
sanitize = os.environ.get("CROSSRANK_SANITIZE")
if sanitize:
    san = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all", "-g"]
    compile_args += san
    link_args += san

ENGINE = "crossrank_engine"
# The CPython glue: csrc/module.c and csrc/py_*.c bind crossrank.h; csrc/py_cpu.c goes into both modules.
GLUE = ["csrc/module.c"] + sorted(glob("csrc/py_*.c"))
engine_sources = [f for f in sorted(glob("csrc/*.c")) if f not in GLUE] + sorted(glob("csrc/kernels/*.c"))
headers = sorted(glob("csrc/*.h")) + sorted(glob("csrc/kernels/*.h")) + sorted(glob("csrc/testing/*.h"))
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_21_API_VERSION"), ("_GNU_SOURCE", None)] + blas_macros
if IS_X86:
    macros.append(("CR_X86", "1"))
include_dirs = [numpy.get_include(), "csrc"] + blas_include


def extension(name, sources):
    return Extension(name, sources=sources, include_dirs=include_dirs, define_macros=macros,
                     extra_compile_args=compile_args, extra_link_args=link_args, depends=headers)


setup(
    libraries=[(ENGINE, {"sources": engine_sources, "depends": headers, "macros": macros,
                         "include_dirs": include_dirs, "cflags": compile_args})],
    ext_modules=[
        extension("crossrank._core", GLUE),
        extension("crossrank._testing", sorted(glob("csrc/testing/*.c")) + ["csrc/py_cpu.c"]),
    ],
    cmdclass={"build_clib": BuildClib, "build_ext": BuildExt},
)
