// Vectors whose length is not a power of two never pass between basic
// blocks (Artifact.cpp, splitUnevenVectorsAcrossBlocks): the x86 back end
// would hand such a value to the next block one scalar per lane. At d = 96
// the row sweeps' accumulators are carried as 64 + 32 lanes, joined in the
// loop body; 100 = 64 + 32 + 4.
// RUN: fwp-compile %models/delta_net.mlir --dim d=96 --cuda=off --cpu=x86-64-v4 --emit=llvm -o - | FileCheck %s --check-prefix=D96
// RUN: fwp-compile %models/delta_net.mlir --dim d=100 --cuda=off --cpu=x86-64-v4 --emit=llvm -o - | FileCheck %s --check-prefix=D100

// D96-NOT: phi <96 x float>
// D96-LABEL: define void @delta_net(
// D96: phi <64 x float>
// D96-NEXT: phi <32 x float>
// D96: shufflevector <64 x float> %{{.*}}, <64 x float> poison, <96 x i32>
// D96: shufflevector <32 x float> %{{.*}}, <32 x float> poison, <96 x i32>
// D96: call <96 x float> @llvm.fmuladd.v96f32
// D96-NOT: phi <96 x float>

// D100-NOT: phi <100 x float>
// D100-LABEL: define void @delta_net(
// D100: phi <64 x float>
// D100-NEXT: phi <32 x float>
// D100-NEXT: phi <4 x float>
// D100-NOT: phi <100 x float>
