// --help of fwp-compile and fwp-opt fits one screen: fwp's own options in
// their categories, no LLVM back-end flags, examples at the end. Every hidden
// option is still listed by --help-hidden (and still works).
// RUN: fwp-compile --help > %t.compile
// RUN: test $(wc -l < %t.compile) -le 60
// RUN: FileCheck %s --check-prefix=COMPILE --implicit-check-not=amdgpu < %t.compile
// RUN: fwp-compile --help-hidden | FileCheck %s --check-prefix=HIDDEN
// RUN: fwp-opt --help > %t.opt
// RUN: test $(wc -l < %t.opt) -le 60
// RUN: FileCheck %s --check-prefix=OPT --implicit-check-not=amdgpu --implicit-check-not=--canonicalize < %t.opt
// RUN: fwp-opt --help-hidden | FileCheck %s --check-prefixes=HIDDEN,OPTHIDDEN
// A hidden upstream pass still runs.
// RUN: fwp-opt %models/rdn.mlir --canonicalize | FileCheck %s --check-prefix=CANON

// COMPILE: USAGE: fwp-compile [options] <layer .mlir file>
// COMPILE: Code generation:
// COMPILE: --cpu=
// COMPILE: --cuda=
// COMPILE: --cuda-block-size=
// COMPILE: --cuda-chip=
// COMPILE: Debugging:
// COMPILE: --mlir-print-ir-after-all
// COMPILE: Output:
// COMPILE: --emit=
// COMPILE: =ptx
// COMPILE: -o <path>
// COMPILE: The layer:
// COMPILE: --dim=<name=value>
// COMPILE: --dtype=
// COMPILE: EXAMPLES:
// COMPILE-NEXT: fwp-compile models/rdn.mlir -o rdn.fwpk

// HIDDEN: --amdgpu-

// OPT: USAGE: fwp-opt [options] <input file>
// OPT: -o <filename>
// OPT: fwp-opt options:
// OPT: --mlir-print-ir-after-all
// OPT: --pass-pipeline=
// OPT: --split-input-file
// OPT: --verify-diagnostics
// OPT: FWP PASSES AND PIPELINES
// OPT: --convert-fwp-to-cpu lower every fwp.scan
// OPT: --fwp-differentiate reverse-mode differentiation
// OPT: --fwp-pipeline
// OPT: EXAMPLES:
// OPT-NEXT: fwp-opt models/delta_rnn.mlir --fwp-differentiate

// OPTHIDDEN: --canonicalize

// CANON: fwp.scan
