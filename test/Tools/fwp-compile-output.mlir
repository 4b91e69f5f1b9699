// fwp-compile's outputs (-o) are written through an exclusive temporary file
// in the target's folder and renamed: never through a symlink, and never
// replacing a device or FIFO. Bad --cpu values are diagnostics.
// RUN: rm -rf %t && mkdir -p %t
// RUN: echo keep > %t/victim
// RUN: ln -s %t/victim %t/link.json
// RUN: not fwp-compile %models/delta_net.mlir --emit=manifest -o %t/link.json 2>&1 | FileCheck %s --check-prefix=SYMLINK
// RUN: FileCheck %s --check-prefix=VICTIM < %t/victim
// RUN: test -L %t/link.json
// A device is written in place: /dev/null stays a character device.
// RUN: fwp-compile %models/delta_net.mlir --emit=manifest -o /dev/null
// RUN: test -c /dev/null
// A regular file is replaced whole; no temporary file is left behind.
// RUN: echo old > %t/out.json
// RUN: fwp-compile %models/delta_net.mlir --emit=manifest -o %t/out.json
// RUN: FileCheck %s --check-prefix=REPLACED < %t/out.json
// RUN: ls -A %t | FileCheck %s --check-prefix=NOTEMP
// RUN: not fwp-compile %models/delta_net.mlir --cpu=bogus -o %t/bogus.fwpk 2>&1 | FileCheck %s --check-prefix=CPU
// RUN: not test -e %t/bogus.fwpk
// RUN: not fwp-compile %models/delta_net.mlir --cpu=x86-64-v3,bogus -o %t/bogus.fwpk 2>&1 | FileCheck %s --check-prefix=CPU
// RUN: not fwp-compile %models/delta_net.mlir --cpu=native,,x86-64 -o %t/bogus.fwpk 2>&1 | FileCheck %s --check-prefix=EMPTY
// RUN: not test -e %t/bogus.fwpk

// SYMLINK: fwp-compile: error: cannot write '{{.*}}link.json': it is a symbolic link
// VICTIM: keep
// REPLACED: "layer": "delta_net"
// NOTEMP-NOT: .tmp-
// CPU: fwp-compile: error: unknown x86-64 processor 'bogus'
// EMPTY: fwp-compile: error: --cpu=native,,x86-64: expected a comma-separated list of processor names
// RUN: not fwp-compile %models/delta_net.mlir --cuda-chip=sm_bogus -o %t/bogus.fwpk 2>&1 | FileCheck %s --check-prefix=CHIP
// RUN: not fwp-compile %models/delta_net.mlir --cuda-chip=gfx90a -o %t/bogus.fwpk 2>&1 | FileCheck %s --check-prefix=CHIP
// RUN: not test -e %t/bogus.fwpk
// CHIP: fwp-compile: error: unknown GPU architecture
