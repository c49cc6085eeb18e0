module {
  func.func private @op6(%s0: index, %x0: tensor<?x5xf32>, %x1: tensor<f32>, %x2: tensor<5xf32>, %dest: memref<?x5xf64>) -> () attributes {passthrough = ["noinline"]} {
    %destt = bufferization.to_tensor %dest restrict writable : memref<?x5xf64> to tensor<?x5xf64>
    %v1 = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> ()>, affine_map<(d0, d1) -> (d1)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} ins(%x0, %x1, %x2 : tensor<?x5xf32>, tensor<f32>, tensor<5xf32>) outs(%destt : tensor<?x5xf64>) {
    ^bb0(%a0: f32, %a1: f32, %a2: f32, %out: f64):
      %t0 = arith.mulf %a0, %a1 : f32
      %t1 = arith.addf %t0, %a2 : f32
      %t2 = arith.constant 0xC0FCF84F : f32
      %t3 = arith.constant 0x40FCF84F : f32
      %t4 = arith.maximumf %t1, %t2 : f32
      %t5 = arith.minimumf %t4, %t3 : f32
      %t6 = arith.mulf %t5, %t5 : f32
      %t7 = arith.constant 0xA59F25C0 : f32
      %t8 = arith.constant 0x2A61337E : f32
      %t9 = math.fma %t7, %t6, %t8 : f32
      %t10 = arith.constant 0xAEBD37FF : f32
      %t11 = math.fma %t9, %t6, %t10 : f32
      %t12 = arith.constant 0x335C0041 : f32
      %t13 = math.fma %t11, %t6, %t12 : f32
      %t14 = arith.constant 0x3779434A : f32
      %t15 = math.fma %t13, %t6, %t14 : f32
      %t16 = arith.constant 0x3A270DED : f32
      %t17 = math.fma %t15, %t6, %t16 : f32
      %t18 = arith.constant 0x3BA059DC : f32
      %t19 = math.fma %t17, %t6, %t18 : f32
      %t20 = arith.mulf %t5, %t19 : f32
      %t21 = arith.constant 0x35A0D3D8 : f32
      %t22 = arith.constant 0x38F895D6 : f32
      %t23 = math.fma %t21, %t6, %t22 : f32
      %t24 = arith.constant 0x3B14AA05 : f32
      %t25 = math.fma %t23, %t6, %t24 : f32
      %t26 = arith.constant 0x3BA059DD : f32
      %t27 = math.fma %t25, %t6, %t26 : f32
      %t28 = arith.divf %t20, %t27 : f32
      %t29 = arith.constant 0x39D1B717 : f32
      %t30 = math.absf %t1 : f32
      %t31 = arith.cmpf olt, %t30, %t29 : f32
      %t32 = arith.select %t31, %t1, %t28 : f32
      %t33 = arith.cmpf uno, %t1, %t1 : f32
      %t34 = arith.select %t33, %t1, %t32 : f32
      %t35 = arith.mulf %t34, %a0 : f32
      %t36 = arith.extf %t35 : f32 to f64
      linalg.yield %t36 : f64
    } -> tensor<?x5xf64>
    bufferization.materialize_in_destination %v1 in writable %dest : (tensor<?x5xf64>, memref<?x5xf64>) -> ()
    return
  }
  func.func private @op8(%s0: index, %x0: tensor<?x5xf32>) -> (tensor<?x5xf32>) attributes {passthrough = ["noinline"]} {
    %v1 = tensor.empty(%s0) : tensor<?x5xf32>
    %v2 = tensor.collapse_shape %x0 [[0, 1]] : tensor<?x5xf32> into tensor<?xf32>
    %v3 = tensor.collapse_shape %v1 [[0, 1]] : tensor<?x5xf32> into tensor<?xf32>
    %v4 = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%v2 : tensor<?xf32>) outs(%v3 : tensor<?xf32>) {
    ^bb0(%a0: f32, %out: f32):
      %t0 = arith.negf %a0 : f32
      %t1 = arith.constant 0xC2CFF1AA : f32
      %t2 = arith.constant 0x42B17218 : f32
      %t3 = arith.maximumf %t0, %t1 : f32
      %t4 = arith.minimumf %t3, %t2 : f32
      %t5 = arith.constant 0x3FB8AA3B : f32
      %t6 = arith.constant 0x3F000000 : f32
      %t7 = arith.mulf %t4, %t5 : f32
      %t8 = arith.addf %t7, %t6 : f32
      %t9 = math.floor %t8 : f32
      %t10 = arith.constant 0xBF318000 : f32
      %t11 = arith.constant 0x395E8083 : f32
      %t12 = math.fma %t9, %t10, %t4 : f32
      %t13 = math.fma %t9, %t11, %t12 : f32
      %t14 = arith.constant 0x39506967 : f32
      %t15 = arith.constant 0x3AB743CE : f32
      %t16 = math.fma %t14, %t13, %t15 : f32
      %t17 = arith.constant 0x3C088908 : f32
      %t18 = math.fma %t16, %t13, %t17 : f32
      %t19 = arith.constant 0x3D2AA9C1 : f32
      %t20 = math.fma %t18, %t13, %t19 : f32
      %t21 = arith.constant 0x3E2AAAAA : f32
      %t22 = math.fma %t20, %t13, %t21 : f32
      %t23 = arith.constant 0x3F000000 : f32
      %t24 = math.fma %t22, %t13, %t23 : f32
      %t25 = arith.mulf %t13, %t13 : f32
      %t26 = arith.constant 0x3F800000 : f32
      %t27 = arith.addf %t13, %t26 : f32
      %t28 = math.fma %t24, %t25, %t27 : f32
      %t29 = arith.fptosi %t9 : f32 to i32
      %t30 = arith.constant 127 : i32
      %t31 = arith.constant 23 : i32
      %t32 = arith.constant 1 : i32
      %t33 = arith.shrsi %t29, %t32 : i32
      %t34 = arith.subi %t29, %t33 : i32
      %t35 = arith.addi %t33, %t30 : i32
      %t36 = arith.shli %t35, %t31 : i32
      %t37 = arith.bitcast %t36 : i32 to f32
      %t38 = arith.mulf %t28, %t37 : f32
      %t39 = arith.addi %t34, %t30 : i32
      %t40 = arith.shli %t39, %t31 : i32
      %t41 = arith.bitcast %t40 : i32 to f32
      %t42 = arith.mulf %t38, %t41 : f32
      %t43 = arith.constant 0x42B17218 : f32
      %t44 = arith.constant 0xC2CFF1AA : f32
      %t45 = arith.constant 0x7F800000 : f32
      %t46 = arith.constant 0x00000000 : f32
      %t47 = arith.cmpf ogt, %t0, %t43 : f32
      %t48 = arith.select %t47, %t45, %t42 : f32
      %t49 = arith.cmpf olt, %t0, %t44 : f32
      %t50 = arith.select %t49, %t46, %t48 : f32
      %t51 = arith.cmpf uno, %t0, %t0 : f32
      %t52 = arith.select %t51, %t0, %t50 : f32
      %t53 = arith.constant 0x3F800000 : f32
      %t54 = arith.addf %t53, %t52 : f32
      %t55 = arith.divf %t53, %t54 : f32
      %t56 = arith.mulf %t55, %a0 : f32
      linalg.yield %t56 : f32
    } -> tensor<?xf32>
    %v5 = tensor.expand_shape %v4 [[0, 1]] output_shape [%s0, 5] : tensor<?xf32> into tensor<?x5xf32>
    return %v5 : tensor<?x5xf32>
  }
  func.func private @op9(%s0: index, %x0: tensor<?x5xf32>, %dest: memref<?x5xf32>) -> () attributes {passthrough = ["noinline"]} {
    %destt = bufferization.to_tensor %dest restrict writable : memref<?x5xf32> to tensor<?x5xf32>
    %v1 = tensor.collapse_shape %x0 [[0, 1]] : tensor<?x5xf32> into tensor<?xf32>
    %v2 = tensor.collapse_shape %destt [[0, 1]] : tensor<?x5xf32> into tensor<?xf32>
    %v3 = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%v1 : tensor<?xf32>) outs(%v2 : tensor<?xf32>) {
    ^bb0(%a0: f32, %out: f32):
      %t0 = arith.negf %a0 : f32
      linalg.yield %t0 : f32
    } -> tensor<?xf32>
    %v4 = tensor.expand_shape %v3 [[0, 1]] output_shape [%s0, 5] : tensor<?xf32> into tensor<?x5xf32>
    bufferization.materialize_in_destination %v4 in writable %dest : (tensor<?x5xf32>, memref<?x5xf32>) -> ()
    return
  }
  func.func @elementwise_chains_forgec_main(%in0: memref<?x5xf32>, %out0: memref<?x5xf64>, %out1: memref<?x5xf32>, %out2: memref<?x5xf32>) attributes {llvm.emit_c_interface} {
    %c0 = arith.constant 0 : index
    %sym_batch = memref.dim %in0, %c0 : memref<?x5xf32>
    %v1 = bufferization.to_tensor %in0 restrict : memref<?x5xf32> to tensor<?x5xf32>
    %v2 = arith.constant dense<"0x00000040"> : tensor<f32>
    %v3 = arith.constant dense<"0x0000003F000080BF0000803E00000040000000BE"> : tensor<5xf32>
    func.call @op6(%sym_batch, %v1, %v2, %v3, %out0) : (index, tensor<?x5xf32>, tensor<f32>, tensor<5xf32>, memref<?x5xf64>) -> ()
    %v5 = func.call @op8(%sym_batch, %v1) : (index, tensor<?x5xf32>) -> (tensor<?x5xf32>)
    func.call @op9(%sym_batch, %v5, %out2) : (index, tensor<?x5xf32>, memref<?x5xf32>) -> ()
    bufferization.materialize_in_destination %v5 in restrict writable %out1 : (tensor<?x5xf32>, memref<?x5xf32>) -> ()
    return
  }
}
