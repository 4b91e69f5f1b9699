// RUN: fwp-opt %s --convert-fwp-to-cpu --convert-to-llvm --reconcile-unrealized-casts --fwp-cpu-entry-points | FileCheck %s

// The packed entry point loads one descriptor pointer per buffer from
// args[i] and calls the C interface wrapper.
// CHECK-LABEL: llvm.func @fwp_two(%arg0: i64, %arg1: !llvm.ptr)
// CHECK: %[[P0:.*]] = llvm.getelementptr %arg1[0] : (!llvm.ptr) -> !llvm.ptr, !llvm.ptr
// CHECK-NEXT: %[[D0:.*]] = llvm.load %[[P0]] : !llvm.ptr -> !llvm.ptr
// CHECK-NEXT: %[[P1:.*]] = llvm.getelementptr %arg1[1] : (!llvm.ptr) -> !llvm.ptr, !llvm.ptr
// CHECK-NEXT: %[[D1:.*]] = llvm.load %[[P1]] : !llvm.ptr -> !llvm.ptr
// CHECK-NEXT: llvm.call @_mlir_ciface_two(%arg0, %[[D0]], %[[D1]]) : (i64, !llvm.ptr, !llvm.ptr) -> ()
// CHECK-NEXT: llvm.return
fwp.scan @two seq(%x : vector<2xf32>) outputs(y : vector<2xf32>) {
  %y = fwp.softmax %x : vector<2xf32>
  fwp.yield %y : vector<2xf32>
}
