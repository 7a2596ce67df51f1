"""dtype="auto": a fixed function of the CPU's vendor, kernel level and the AMX permission's answer
(never a timing probe, never int8), and model.dtype tells what was picked."""
import json
import os
import subprocess
import sys

import pytest

import crossrank
from crossrank.model import auto_dtype

INFO = crossrank.cpu_info()


@pytest.mark.parametrize("vendor,isa,amx,want", [
    ("GenuineIntel", "amx", True, "bfloat16"),         # tiles
    ("GenuineIntel", "amx", False, "float32"),         # tiles refused by the OS
    ("GenuineIntel", "avx512bf16", False, "float32"),  # vdpbf16ps at half the FMA rate
    ("AuthenticAMD", "avx512bf16", False, "bfloat16"), # Zen 4/5: twice the FMA rate
    ("AuthenticAMD", "avx512vnni", False, "float32"),
    ("AuthenticAMD", "avx2", False, "float32"),
    ("GenuineIntel", "avx512vnni", False, "float32"),
    ("GenuineIntel", "avx2", False, "float32"),
    ("", "ref", False, "float32"),
])
def test_the_auto_table(vendor, isa, amx, want):
    assert auto_dtype(vendor, isa, amx) == want


def test_auto_never_picks_int8():
    for vendor in ("GenuineIntel", "AuthenticAMD", "HygonGenuine", ""):
        for isa in ("ref", "avx2", "avxvnni", "avx512", "avx512vnni", "avx512bf16", "amx"):
            for amx in (False, True):
                assert auto_dtype(vendor, isa, amx) in ("float32", "bfloat16")


SCRIPT = """
import json, crossrank
from crossrank.model import resolve_dtype
before = crossrank.cpu_info()["amx"]
dtype = resolve_dtype("auto")
info = crossrank.cpu_info()
print(json.dumps({"before": before, "dtype": dtype, "isa": info["isa"], "amx": info["amx"], "vendor": info["vendor"]}))
"""


def auto_under(env_extra):
    env = dict(os.environ)
    for key in ("CROSSRANK_ISA", "CROSSRANK_AMX_DENY"):
        env.pop(key, None)
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_auto_on_this_cpu_follows_the_table():
    run = auto_under({})
    assert run["before"] == "not asked yet"  # importing asked nothing
    assert run["dtype"] == auto_dtype(run["vendor"], run["isa"], run["amx"] == "usable")


@pytest.mark.skipif(INFO["detected"] != "amx", reason=f"no AMX here (kernels up to {INFO['detected']})")
def test_auto_on_an_amx_cpu_is_bf16_unless_the_tiles_are_refused_or_capped():
    assert auto_under({})["dtype"] == "bfloat16"
    denied = auto_under({"CROSSRANK_AMX_DENY": "1"})
    assert denied["isa"] == "avx512bf16" and "refused" in denied["amx"]
    want = "bfloat16" if INFO["vendor"] == "AuthenticAMD" else "float32"
    assert denied["dtype"] == want
    assert auto_under({"CROSSRANK_ISA": "avx512bf16"})["dtype"] == want
