// A bounded mutation fuzz of models/*.mlir: fwp-opt and fwp-compile
// (--emit=manifest) reject every mutated input with a diagnostic or accept
// it, and never crash (docs/reliability.md has the larger runs).
// RUN: python3 %fwp_src_root/scripts/fuzz_compiler.py --count 60 --seed 13 | FileCheck %s
// CHECK: fuzz_compiler: 60 mutated inputs (seed 13), 120 tool runs: {{[0-9]+}} parsed and verified, {{[0-9]+}} rejected with a diagnostic, 0 crashes
