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
      %t9 = arith.mulf %t7, %t6 fastmath<contract> : f32
      %t10 = arith.addf %t9, %t8 fastmath<contract> : f32
      %t11 = arith.constant 0xAEBD37FF : f32
      %t12 = arith.mulf %t10, %t6 fastmath<contract> : f32
      %t13 = arith.addf %t12, %t11 fastmath<contract> : f32
      %t14 = arith.constant 0x335C0041 : f32
      %t15 = arith.mulf %t13, %t6 fastmath<contract> : f32
      %t16 = arith.addf %t15, %t14 fastmath<contract> : f32
      %t17 = arith.constant 0x3779434A : f32
      %t18 = arith.mulf %t16, %t6 fastmath<contract> : f32
      %t19 = arith.addf %t18, %t17 fastmath<contract> : f32
      %t20 = arith.constant 0x3A270DED : f32
      %t21 = arith.mulf %t19, %t6 fastmath<contract> : f32
      %t22 = arith.addf %t21, %t20 fastmath<contract> : f32
      %t23 = arith.constant 0x3BA059DC : f32
      %t24 = arith.mulf %t22, %t6 fastmath<contract> : f32
      %t25 = arith.addf %t24, %t23 fastmath<contract> : f32
      %t26 = arith.mulf %t5, %t25 : f32
      %t27 = arith.constant 0x35A0D3D8 : f32
      %t28 = arith.constant 0x38F895D6 : f32
      %t29 = arith.mulf %t27, %t6 fastmath<contract> : f32
      %t30 = arith.addf %t29, %t28 fastmath<contract> : f32
      %t31 = arith.constant 0x3B14AA05 : f32
      %t32 = arith.mulf %t30, %t6 fastmath<contract> : f32
      %t33 = arith.addf %t32, %t31 fastmath<contract> : f32
      %t34 = arith.constant 0x3BA059DD : f32
      %t35 = arith.mulf %t33, %t6 fastmath<contract> : f32
      %t36 = arith.addf %t35, %t34 fastmath<contract> : f32
      %t37 = arith.divf %t26, %t36 : f32
      %t38 = arith.constant 0x39D1B717 : f32
      %t39 = math.absf %t1 : f32
      %t40 = arith.cmpf olt, %t39, %t38 : f32
      %t41 = arith.select %t40, %t1, %t37 : f32
      %t42 = arith.cmpf uno, %t1, %t1 : f32
      %t43 = arith.select %t42, %t1, %t41 : f32
      %t44 = arith.mulf %t43, %a0 : f32
      %t45 = arith.extf %t44 : f32 to f64
      linalg.yield %t45 : f64
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
      %t12 = arith.mulf %t9, %t10 fastmath<contract> : f32
      %t13 = arith.addf %t12, %t4 fastmath<contract> : f32
      %t14 = arith.mulf %t9, %t11 fastmath<contract> : f32
      %t15 = arith.addf %t14, %t13 fastmath<contract> : f32
      %t16 = arith.constant 0x39506967 : f32
      %t17 = arith.constant 0x3AB743CE : f32
      %t18 = arith.mulf %t16, %t15 fastmath<contract> : f32
      %t19 = arith.addf %t18, %t17 fastmath<contract> : f32
      %t20 = arith.constant 0x3C088908 : f32
      %t21 = arith.mulf %t19, %t15 fastmath<contract> : f32
      %t22 = arith.addf %t21, %t20 fastmath<contract> : f32
      %t23 = arith.constant 0x3D2AA9C1 : f32
      %t24 = arith.mulf %t22, %t15 fastmath<contract> : f32
      %t25 = arith.addf %t24, %t23 fastmath<contract> : f32
      %t26 = arith.constant 0x3E2AAAAA : f32
      %t27 = arith.mulf %t25, %t15 fastmath<contract> : f32
      %t28 = arith.addf %t27, %t26 fastmath<contract> : f32
      %t29 = arith.constant 0x3F000000 : f32
      %t30 = arith.mulf %t28, %t15 fastmath<contract> : f32
      %t31 = arith.addf %t30, %t29 fastmath<contract> : f32
      %t32 = arith.mulf %t15, %t15 : f32
      %t33 = arith.constant 0x3F800000 : f32
      %t34 = arith.addf %t15, %t33 : f32
      %t35 = arith.mulf %t31, %t32 fastmath<contract> : f32
      %t36 = arith.addf %t35, %t34 fastmath<contract> : f32
      %t37 = arith.fptosi %t9 : f32 to i32
      %t38 = arith.constant 127 : i32
      %t39 = arith.constant 23 : i32
      %t40 = arith.constant 1 : i32
      %t41 = arith.shrsi %t37, %t40 : i32
      %t42 = arith.subi %t37, %t41 : i32
      %t43 = arith.addi %t41, %t38 : i32
      %t44 = arith.shli %t43, %t39 : i32
      %t45 = arith.bitcast %t44 : i32 to f32
      %t46 = arith.mulf %t36, %t45 : f32
      %t47 = arith.addi %t42, %t38 : i32
      %t48 = arith.shli %t47, %t39 : i32
      %t49 = arith.bitcast %t48 : i32 to f32
      %t50 = arith.mulf %t46, %t49 : f32
      %t51 = arith.constant 0x42B17218 : f32
      %t52 = arith.constant 0xC2CFF1AA : f32
      %t53 = arith.constant 0x7F800000 : f32
      %t54 = arith.constant 0x00000000 : f32
      %t55 = arith.cmpf ogt, %t0, %t51 : f32
      %t56 = arith.select %t55, %t53, %t50 : f32
      %t57 = arith.cmpf olt, %t0, %t52 : f32
      %t58 = arith.select %t57, %t54, %t56 : f32
      %t59 = arith.cmpf uno, %t0, %t0 : f32
      %t60 = arith.select %t59, %t0, %t58 : f32
      %t61 = arith.constant 0x3F800000 : f32
      %t62 = arith.addf %t61, %t60 : f32
      %t63 = arith.divf %t61, %t62 : f32
      %t64 = arith.mulf %t63, %a0 : f32
      linalg.yield %t64 : f32
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
