"""Builds crossrank._core with plain setuptools against the CPython and NumPy C APIs.

Kernel files named ``*_avx2.c``, ``*_avxvnni.c``, ``*_avx512.c``, ``*_avx512vnni.c`` and
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
from setuptools.command.build_ext import build_ext

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


class BuildExt(build_ext):
    """build_ext that compiles ISA-specific kernel files with their own flags."""

    def build_extension(self, ext):
        plain, kernels = [], []
        for src in ext.sources:
            (kernels if kernel_flags(src) else plain).append(src)
        extra = list(ext.extra_compile_args or [])
        objects = []
        for src in kernels:
            if not IS_X86:
                continue
            objects += self.compiler.compile(
                [src], output_dir=self.build_temp, include_dirs=ext.include_dirs,
                macros=ext.define_macros, extra_postargs=extra + kernel_flags(src),
                depends=ext.depends)
        ext.sources = plain
        # the kernel files are no longer sources: keep them in the up-to-date check, or editing
        # only one of them would leave the old extension in place
        ext.depends = list(ext.depends or []) + [src for src in kernels if src not in (ext.depends or [])]
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


blas_include, blas_libs, blas_macros = openblas_flags()
compile_args = ["-std=c11", "-O3", "-fvisibility=hidden", "-fno-strict-aliasing",
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

sources = sorted(glob("csrc/*.c")) + sorted(glob("csrc/kernels/*.c"))
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_21_API_VERSION"), ("_GNU_SOURCE", None)] + blas_macros
if IS_X86:
    macros.append(("CR_X86", "1"))

setup(
    ext_modules=[
        Extension(
            "crossrank._core",
            sources=sources,
            include_dirs=[numpy.get_include(), "csrc"] + blas_include,
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            depends=sorted(glob("csrc/*.h")) + sorted(glob("csrc/kernels/*.h")),
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
