// Malformed input never crashes a tool: exit 1 (`not` fails on a crash) and
// a file:line:col diagnostic.
// RUN: not fwp-opt %S/Inputs/truncated.mlir 2>&1 | FileCheck %s --check-prefix=TRUNC
// RUN: not fwp-opt %S/Inputs/garbage.mlir 2>&1 | FileCheck %s --check-prefix=GARBAGE
// RUN: not fwp-compile %S/Inputs/truncated.mlir -o %t.fwpk 2>&1 | FileCheck %s --check-prefix=TRUNC
// RUN: not fwp-compile %S/Inputs/garbage.mlir -o %t.fwpk 2>&1 | FileCheck %s --check-prefix=GARBAGE
// RUN: not fwp-compile %S/Inputs/does-not-exist.mlir -o %t.fwpk 2>&1 | FileCheck %s --check-prefix=MISSING
// RUN: not fwp-compile %models/delta_net.mlir --dim e=4 -o %t.fwpk 2>&1 | FileCheck %s --check-prefix=DIM
// RUN: not test -e %t.fwpk

// TRUNC: truncated.mlir:{{[0-9]+}}:{{[0-9]+}}: error:
// GARBAGE: garbage.mlir:1:{{[0-9]+}}: error:
// MISSING: fwp-compile: error: cannot open input file
// DIM: delta_net.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'fwp.scan' op has no dim named 'e'

// --dim values are bounded: a clear error, not an overflow, OOM or hang.
// RUN: not fwp-compile %models/delta_net.mlir --dim d=2147483648 -o %t.huge.fwpk 2>&1 | FileCheck %s --check-prefix=HUGE
// RUN: not fwp-compile %models/delta_net.mlir --dim d=65536 -o %t.huge.fwpk 2>&1 | FileCheck %s --check-prefix=HUGE2
// RUN: not fwp-compile %models/delta_net.mlir --dim d=99999999999999999999999 -o %t.huge.fwpk 2>&1 | FileCheck %s --check-prefix=NOTINT
// RUN: not fwp-compile %models/delta_net.mlir --dim d=-3 -o %t.huge.fwpk 2>&1 | FileCheck %s --check-prefix=NOTINT
// RUN: not test -e %t.huge.fwpk
// HUGE: error: fwp-specialize-dims: 'd=2147483648' is larger than the largest supported size 4096
// HUGE2: error: fwp-specialize-dims: 'd=65536' is larger than the largest supported size 4096
// NOTINT: error: fwp-specialize-dims: expected name=positive-integer
