module {
  func.func private @op2(%s0: index, %x0: tensor<?x8xf32>, %x1: tensor<1x8x32xf32>, %e0: tensor<24xf32>, %dest: memref<?x24xf32>) -> () attributes {passthrough = ["noinline"]} {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c8 = arith.constant 8 : index
    %c32 = arith.constant 32 : index
    %c24 = arith.constant 24 : index
    %c128 = arith.constant 128 : index
    %c171 = arith.constant 171 : index
    %c2 = arith.constant 2 : index
    %c3 = arith.constant 3 : index
    %c4 = arith.constant 4 : index
    %c5 = arith.constant 5 : index
    %c6 = arith.constant 6 : index
    %c7 = arith.constant 7 : index
    %cm8 = arith.constant -8 : index
    %cm4 = arith.constant -4 : index
    %cm2 = arith.constant -2 : index
    %c64 = arith.constant 64 : index
    %c96 = arith.constant 96 : index
    %destt = bufferization.to_tensor %dest restrict writable : memref<?x24xf32> to tensor<?x24xf32>
    %v1 = arith.constant dense<0.0> : vector<32xf32>
    %v2 = arith.constant 0.0 : f32
    %v3 = vector.create_mask %c24 : vector<32xi1>
    %v4 = func.call @forgec_threads() : () -> index
    %v5 = arith.ceildivui %s0, %c8 : index
    %v6 = arith.divui %s0, %c171 : index
    %v7 = arith.minui %v4, %v5 : index
    %v8 = arith.minui %v7, %v6 : index
    %v9 = arith.maxui %v8, %c1 : index
    %v10 = arith.ceildivui %v5, %v9 : index
    %v11 = arith.muli %v10, %c8 : index
    %v12 = arith.maxui %v11, %c1 : index
    %v13 = arith.divui %v4, %v9 : index
    %v14 = arith.muli %s0, %c1 : index
    %v15 = arith.muli %c171, %v9 : index
    %v16 = arith.divui %v14, %v15 : index
    %v17 = arith.minui %v13, %c1 : index
    %v18 = arith.minui %v17, %v16 : index
    %v19 = arith.maxui %v18, %c1 : index
    %v20 = arith.ceildivui %c1, %v19 : index
    %v24 = scf.forall (%v21, %v22) in (%v9, %v19) shared_outs(%v23 = %destt) -> (tensor<?x24xf32>) {
    %v25 = arith.muli %v21, %v12 : index
    %v26 = arith.minui %v25, %s0 : index
    %v27 = arith.addi %v26, %v12 : index
    %v28 = arith.minui %v27, %s0 : index
    %v29 = arith.subi %v28, %v26 : index
    %v30 = arith.muli %v22, %v20 : index
    %v31 = arith.minui %v30, %c1 : index
    %v32 = arith.addi %v31, %v20 : index
    %v33 = arith.minui %v32, %c1 : index
    %v34 = arith.subi %v33, %v31 : index
    %v35 = arith.muli %v31, %c32 : index
    %v36 = arith.muli %v33, %c32 : index
    %v37 = arith.minui %v36, %c0 : index
    %v38 = arith.cmpi eq, %v33, %c1 : index
    %v39 = arith.select %v38, %c24, %v37 : index
    %v40 = arith.subi %v39, %v35 : index
    %v41 = tensor.extract_slice %v23[%v26, %v35] [%v29, %v40] [1, 1] : tensor<?x24xf32> to tensor<?x?xf32>
    %v42 = arith.remui %v29, %c8 : index
    %v43 = arith.subi %v29, %v42 : index
    %v46 = scf.for %v44 = %v35 to %v37 step %c32 iter_args(%v45 = %v41) -> (tensor<?x?xf32>) {
    %v49 = scf.for %v47 = %c0 to %v43 step %c8 iter_args(%v48 = %v45) -> (tensor<?x?xf32>) {
    %v50 = arith.addi %v47, %c1 : index
    %v51 = arith.addi %v47, %c2 : index
    %v52 = arith.addi %v47, %c3 : index
    %v53 = arith.addi %v47, %c4 : index
    %v54 = arith.addi %v47, %c5 : index
    %v55 = arith.addi %v47, %c6 : index
    %v56 = arith.addi %v47, %c7 : index
    %v57 = arith.addi %v26, %v47 : index
    %v58 = arith.addi %v57, %c1 : index
    %v59 = arith.addi %v57, %c2 : index
    %v60 = arith.addi %v57, %c3 : index
    %v61 = arith.addi %v57, %c4 : index
    %v62 = arith.addi %v57, %c5 : index
    %v63 = arith.addi %v57, %c6 : index
    %v64 = arith.addi %v57, %c7 : index
    %v65 = arith.subi %v44, %v35 : index
    %v66 = arith.divui %v44, %c32 : index
    %sum1:8 = scf.for %k1 = %c0 to %c8 step %c1 iter_args(%acc1_0_0 = %v1, %acc1_1_0 = %v1, %acc1_2_0 = %v1, %acc1_3_0 = %v1, %acc1_4_0 = %v1, %acc1_5_0 = %v1, %acc1_6_0 = %v1, %acc1_7_0 = %v1) -> (vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>) {
      %b1_0 = vector.transfer_read %x1[%v66, %k1, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %x1_0 = tensor.extract %x0[%v57, %k1] : tensor<?x8xf32>
      %xb1_0 = vector.broadcast %x1_0 : f32 to vector<32xf32>
      %n1_0_0 = vector.fma %xb1_0, %b1_0, %acc1_0_0 : vector<32xf32>
      %x1_1 = tensor.extract %x0[%v58, %k1] : tensor<?x8xf32>
      %xb1_1 = vector.broadcast %x1_1 : f32 to vector<32xf32>
      %n1_1_0 = vector.fma %xb1_1, %b1_0, %acc1_1_0 : vector<32xf32>
      %x1_2 = tensor.extract %x0[%v59, %k1] : tensor<?x8xf32>
      %xb1_2 = vector.broadcast %x1_2 : f32 to vector<32xf32>
      %n1_2_0 = vector.fma %xb1_2, %b1_0, %acc1_2_0 : vector<32xf32>
      %x1_3 = tensor.extract %x0[%v60, %k1] : tensor<?x8xf32>
      %xb1_3 = vector.broadcast %x1_3 : f32 to vector<32xf32>
      %n1_3_0 = vector.fma %xb1_3, %b1_0, %acc1_3_0 : vector<32xf32>
      %x1_4 = tensor.extract %x0[%v61, %k1] : tensor<?x8xf32>
      %xb1_4 = vector.broadcast %x1_4 : f32 to vector<32xf32>
      %n1_4_0 = vector.fma %xb1_4, %b1_0, %acc1_4_0 : vector<32xf32>
      %x1_5 = tensor.extract %x0[%v62, %k1] : tensor<?x8xf32>
      %xb1_5 = vector.broadcast %x1_5 : f32 to vector<32xf32>
      %n1_5_0 = vector.fma %xb1_5, %b1_0, %acc1_5_0 : vector<32xf32>
      %x1_6 = tensor.extract %x0[%v63, %k1] : tensor<?x8xf32>
      %xb1_6 = vector.broadcast %x1_6 : f32 to vector<32xf32>
      %n1_6_0 = vector.fma %xb1_6, %b1_0, %acc1_6_0 : vector<32xf32>
      %x1_7 = tensor.extract %x0[%v64, %k1] : tensor<?x8xf32>
      %xb1_7 = vector.broadcast %x1_7 : f32 to vector<32xf32>
      %n1_7_0 = vector.fma %xb1_7, %b1_0, %acc1_7_0 : vector<32xf32>
      scf.yield %n1_0_0, %n1_1_0, %n1_2_0, %n1_3_0, %n1_4_0, %n1_5_0, %n1_6_0, %n1_7_0 : vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>
    }
    %v67 = vector.transfer_read %e0[%v44], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<32xf32>
    %v68 = arith.addf %sum1#0, %v67 : vector<32xf32>
    %v70 = arith.cmpf olt, %v68, %v1 : vector<32xf32>
    %v69 = arith.select %v70, %v1, %v68 : vector<32xi1>, vector<32xf32>
    %v71 = vector.transfer_write %v69, %v48[%v47, %v65] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v72 = arith.addf %sum1#1, %v67 : vector<32xf32>
    %v74 = arith.cmpf olt, %v72, %v1 : vector<32xf32>
    %v73 = arith.select %v74, %v1, %v72 : vector<32xi1>, vector<32xf32>
    %v75 = vector.transfer_write %v73, %v71[%v50, %v65] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v76 = arith.addf %sum1#2, %v67 : vector<32xf32>
    %v78 = arith.cmpf olt, %v76, %v1 : vector<32xf32>
    %v77 = arith.select %v78, %v1, %v76 : vector<32xi1>, vector<32xf32>
    %v79 = vector.transfer_write %v77, %v75[%v51, %v65] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v80 = arith.addf %sum1#3, %v67 : vector<32xf32>
    %v82 = arith.cmpf olt, %v80, %v1 : vector<32xf32>
    %v81 = arith.select %v82, %v1, %v80 : vector<32xi1>, vector<32xf32>
    %v83 = vector.transfer_write %v81, %v79[%v52, %v65] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v84 = arith.addf %sum1#4, %v67 : vector<32xf32>
    %v86 = arith.cmpf olt, %v84, %v1 : vector<32xf32>
    %v85 = arith.select %v86, %v1, %v84 : vector<32xi1>, vector<32xf32>
    %v87 = vector.transfer_write %v85, %v83[%v53, %v65] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v88 = arith.addf %sum1#5, %v67 : vector<32xf32>
    %v90 = arith.cmpf olt, %v88, %v1 : vector<32xf32>
    %v89 = arith.select %v90, %v1, %v88 : vector<32xi1>, vector<32xf32>
    %v91 = vector.transfer_write %v89, %v87[%v54, %v65] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v92 = arith.addf %sum1#6, %v67 : vector<32xf32>
    %v94 = arith.cmpf olt, %v92, %v1 : vector<32xf32>
    %v93 = arith.select %v94, %v1, %v92 : vector<32xi1>, vector<32xf32>
    %v95 = vector.transfer_write %v93, %v91[%v55, %v65] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v96 = arith.addf %sum1#7, %v67 : vector<32xf32>
    %v98 = arith.cmpf olt, %v96, %v1 : vector<32xf32>
    %v97 = arith.select %v98, %v1, %v96 : vector<32xi1>, vector<32xf32>
    %v99 = vector.transfer_write %v97, %v95[%v56, %v65] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    scf.yield %v99 : tensor<?x?xf32>
    }
    scf.yield %v49 : tensor<?x?xf32>
    }
    %v100 = scf.if %v38 -> (tensor<?x?xf32>) {
    %v103 = scf.for %v101 = %c0 to %v43 step %c8 iter_args(%v102 = %v46) -> (tensor<?x?xf32>) {
    %v104 = arith.addi %v101, %c1 : index
    %v105 = arith.addi %v101, %c2 : index
    %v106 = arith.addi %v101, %c3 : index
    %v107 = arith.addi %v101, %c4 : index
    %v108 = arith.addi %v101, %c5 : index
    %v109 = arith.addi %v101, %c6 : index
    %v110 = arith.addi %v101, %c7 : index
    %v111 = arith.addi %v26, %v101 : index
    %v112 = arith.addi %v111, %c1 : index
    %v113 = arith.addi %v111, %c2 : index
    %v114 = arith.addi %v111, %c3 : index
    %v115 = arith.addi %v111, %c4 : index
    %v116 = arith.addi %v111, %c5 : index
    %v117 = arith.addi %v111, %c6 : index
    %v118 = arith.addi %v111, %c7 : index
    %v119 = arith.subi %c0, %v35 : index
    %v120 = arith.divui %c0, %c32 : index
    %sum2:8 = scf.for %k2 = %c0 to %c8 step %c1 iter_args(%acc2_0_0 = %v1, %acc2_1_0 = %v1, %acc2_2_0 = %v1, %acc2_3_0 = %v1, %acc2_4_0 = %v1, %acc2_5_0 = %v1, %acc2_6_0 = %v1, %acc2_7_0 = %v1) -> (vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>) {
      %b2_0 = vector.transfer_read %x1[%v120, %k2, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %x2_0 = tensor.extract %x0[%v111, %k2] : tensor<?x8xf32>
      %xb2_0 = vector.broadcast %x2_0 : f32 to vector<32xf32>
      %n2_0_0 = vector.fma %xb2_0, %b2_0, %acc2_0_0 : vector<32xf32>
      %x2_1 = tensor.extract %x0[%v112, %k2] : tensor<?x8xf32>
      %xb2_1 = vector.broadcast %x2_1 : f32 to vector<32xf32>
      %n2_1_0 = vector.fma %xb2_1, %b2_0, %acc2_1_0 : vector<32xf32>
      %x2_2 = tensor.extract %x0[%v113, %k2] : tensor<?x8xf32>
      %xb2_2 = vector.broadcast %x2_2 : f32 to vector<32xf32>
      %n2_2_0 = vector.fma %xb2_2, %b2_0, %acc2_2_0 : vector<32xf32>
      %x2_3 = tensor.extract %x0[%v114, %k2] : tensor<?x8xf32>
      %xb2_3 = vector.broadcast %x2_3 : f32 to vector<32xf32>
      %n2_3_0 = vector.fma %xb2_3, %b2_0, %acc2_3_0 : vector<32xf32>
      %x2_4 = tensor.extract %x0[%v115, %k2] : tensor<?x8xf32>
      %xb2_4 = vector.broadcast %x2_4 : f32 to vector<32xf32>
      %n2_4_0 = vector.fma %xb2_4, %b2_0, %acc2_4_0 : vector<32xf32>
      %x2_5 = tensor.extract %x0[%v116, %k2] : tensor<?x8xf32>
      %xb2_5 = vector.broadcast %x2_5 : f32 to vector<32xf32>
      %n2_5_0 = vector.fma %xb2_5, %b2_0, %acc2_5_0 : vector<32xf32>
      %x2_6 = tensor.extract %x0[%v117, %k2] : tensor<?x8xf32>
      %xb2_6 = vector.broadcast %x2_6 : f32 to vector<32xf32>
      %n2_6_0 = vector.fma %xb2_6, %b2_0, %acc2_6_0 : vector<32xf32>
      %x2_7 = tensor.extract %x0[%v118, %k2] : tensor<?x8xf32>
      %xb2_7 = vector.broadcast %x2_7 : f32 to vector<32xf32>
      %n2_7_0 = vector.fma %xb2_7, %b2_0, %acc2_7_0 : vector<32xf32>
      scf.yield %n2_0_0, %n2_1_0, %n2_2_0, %n2_3_0, %n2_4_0, %n2_5_0, %n2_6_0, %n2_7_0 : vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>
    }
    %v121 = vector.transfer_read %e0[%c0], %v2, %v3 : tensor<24xf32>, vector<32xf32>
    %v122 = arith.addf %sum2#0, %v121 : vector<32xf32>
    %v124 = arith.cmpf olt, %v122, %v1 : vector<32xf32>
    %v123 = arith.select %v124, %v1, %v122 : vector<32xi1>, vector<32xf32>
    %v125 = vector.transfer_write %v123, %v102[%v101, %v119], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v126 = arith.addf %sum2#1, %v121 : vector<32xf32>
    %v128 = arith.cmpf olt, %v126, %v1 : vector<32xf32>
    %v127 = arith.select %v128, %v1, %v126 : vector<32xi1>, vector<32xf32>
    %v129 = vector.transfer_write %v127, %v125[%v104, %v119], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v130 = arith.addf %sum2#2, %v121 : vector<32xf32>
    %v132 = arith.cmpf olt, %v130, %v1 : vector<32xf32>
    %v131 = arith.select %v132, %v1, %v130 : vector<32xi1>, vector<32xf32>
    %v133 = vector.transfer_write %v131, %v129[%v105, %v119], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v134 = arith.addf %sum2#3, %v121 : vector<32xf32>
    %v136 = arith.cmpf olt, %v134, %v1 : vector<32xf32>
    %v135 = arith.select %v136, %v1, %v134 : vector<32xi1>, vector<32xf32>
    %v137 = vector.transfer_write %v135, %v133[%v106, %v119], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v138 = arith.addf %sum2#4, %v121 : vector<32xf32>
    %v140 = arith.cmpf olt, %v138, %v1 : vector<32xf32>
    %v139 = arith.select %v140, %v1, %v138 : vector<32xi1>, vector<32xf32>
    %v141 = vector.transfer_write %v139, %v137[%v107, %v119], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v142 = arith.addf %sum2#5, %v121 : vector<32xf32>
    %v144 = arith.cmpf olt, %v142, %v1 : vector<32xf32>
    %v143 = arith.select %v144, %v1, %v142 : vector<32xi1>, vector<32xf32>
    %v145 = vector.transfer_write %v143, %v141[%v108, %v119], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v146 = arith.addf %sum2#6, %v121 : vector<32xf32>
    %v148 = arith.cmpf olt, %v146, %v1 : vector<32xf32>
    %v147 = arith.select %v148, %v1, %v146 : vector<32xi1>, vector<32xf32>
    %v149 = vector.transfer_write %v147, %v145[%v109, %v119], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v150 = arith.addf %sum2#7, %v121 : vector<32xf32>
    %v152 = arith.cmpf olt, %v150, %v1 : vector<32xf32>
    %v151 = arith.select %v152, %v1, %v150 : vector<32xi1>, vector<32xf32>
    %v153 = vector.transfer_write %v151, %v149[%v110, %v119], %v3 : vector<32xf32>, tensor<?x?xf32>
    scf.yield %v153 : tensor<?x?xf32>
    }
    scf.yield %v103 : tensor<?x?xf32>
    } else {
      scf.yield %v46 : tensor<?x?xf32>
    }
    %v154 = arith.andi %v42, %c4 : index
    %v155 = arith.andi %v42, %cm8 : index
    %v156 = arith.addi %v43, %v155 : index
    %v157 = arith.addi %v156, %v154 : index
    %v160 = scf.for %v158 = %v156 to %v157 step %c4 iter_args(%v159 = %v100) -> (tensor<?x?xf32>) {
    %v163 = scf.for %v161 = %v35 to %v37 step %c32 iter_args(%v162 = %v159) -> (tensor<?x?xf32>) {
    %v164 = arith.addi %v158, %c1 : index
    %v165 = arith.addi %v158, %c2 : index
    %v166 = arith.addi %v158, %c3 : index
    %v167 = arith.addi %v26, %v158 : index
    %v168 = arith.addi %v167, %c1 : index
    %v169 = arith.addi %v167, %c2 : index
    %v170 = arith.addi %v167, %c3 : index
    %v171 = arith.subi %v161, %v35 : index
    %v172 = arith.divui %v161, %c32 : index
    %sum3:4 = scf.for %k3 = %c0 to %c8 step %c1 iter_args(%acc3_0_0 = %v1, %acc3_1_0 = %v1, %acc3_2_0 = %v1, %acc3_3_0 = %v1) -> (vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>) {
      %b3_0 = vector.transfer_read %x1[%v172, %k3, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %x3_0 = tensor.extract %x0[%v167, %k3] : tensor<?x8xf32>
      %xb3_0 = vector.broadcast %x3_0 : f32 to vector<32xf32>
      %n3_0_0 = vector.fma %xb3_0, %b3_0, %acc3_0_0 : vector<32xf32>
      %x3_1 = tensor.extract %x0[%v168, %k3] : tensor<?x8xf32>
      %xb3_1 = vector.broadcast %x3_1 : f32 to vector<32xf32>
      %n3_1_0 = vector.fma %xb3_1, %b3_0, %acc3_1_0 : vector<32xf32>
      %x3_2 = tensor.extract %x0[%v169, %k3] : tensor<?x8xf32>
      %xb3_2 = vector.broadcast %x3_2 : f32 to vector<32xf32>
      %n3_2_0 = vector.fma %xb3_2, %b3_0, %acc3_2_0 : vector<32xf32>
      %x3_3 = tensor.extract %x0[%v170, %k3] : tensor<?x8xf32>
      %xb3_3 = vector.broadcast %x3_3 : f32 to vector<32xf32>
      %n3_3_0 = vector.fma %xb3_3, %b3_0, %acc3_3_0 : vector<32xf32>
      scf.yield %n3_0_0, %n3_1_0, %n3_2_0, %n3_3_0 : vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>
    }
    %v173 = vector.transfer_read %e0[%v161], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<32xf32>
    %v174 = arith.addf %sum3#0, %v173 : vector<32xf32>
    %v176 = arith.cmpf olt, %v174, %v1 : vector<32xf32>
    %v175 = arith.select %v176, %v1, %v174 : vector<32xi1>, vector<32xf32>
    %v177 = vector.transfer_write %v175, %v162[%v158, %v171] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v178 = arith.addf %sum3#1, %v173 : vector<32xf32>
    %v180 = arith.cmpf olt, %v178, %v1 : vector<32xf32>
    %v179 = arith.select %v180, %v1, %v178 : vector<32xi1>, vector<32xf32>
    %v181 = vector.transfer_write %v179, %v177[%v164, %v171] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v182 = arith.addf %sum3#2, %v173 : vector<32xf32>
    %v184 = arith.cmpf olt, %v182, %v1 : vector<32xf32>
    %v183 = arith.select %v184, %v1, %v182 : vector<32xi1>, vector<32xf32>
    %v185 = vector.transfer_write %v183, %v181[%v165, %v171] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v186 = arith.addf %sum3#3, %v173 : vector<32xf32>
    %v188 = arith.cmpf olt, %v186, %v1 : vector<32xf32>
    %v187 = arith.select %v188, %v1, %v186 : vector<32xi1>, vector<32xf32>
    %v189 = vector.transfer_write %v187, %v185[%v166, %v171] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    scf.yield %v189 : tensor<?x?xf32>
    }
    %v190 = scf.if %v38 -> (tensor<?x?xf32>) {
    %v191 = arith.addi %v158, %c1 : index
    %v192 = arith.addi %v158, %c2 : index
    %v193 = arith.addi %v158, %c3 : index
    %v194 = arith.addi %v26, %v158 : index
    %v195 = arith.addi %v194, %c1 : index
    %v196 = arith.addi %v194, %c2 : index
    %v197 = arith.addi %v194, %c3 : index
    %v198 = arith.subi %c0, %v35 : index
    %v199 = arith.divui %c0, %c32 : index
    %sum4:4 = scf.for %k4 = %c0 to %c8 step %c1 iter_args(%acc4_0_0 = %v1, %acc4_1_0 = %v1, %acc4_2_0 = %v1, %acc4_3_0 = %v1) -> (vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>) {
      %b4_0 = vector.transfer_read %x1[%v199, %k4, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %x4_0 = tensor.extract %x0[%v194, %k4] : tensor<?x8xf32>
      %xb4_0 = vector.broadcast %x4_0 : f32 to vector<32xf32>
      %n4_0_0 = vector.fma %xb4_0, %b4_0, %acc4_0_0 : vector<32xf32>
      %x4_1 = tensor.extract %x0[%v195, %k4] : tensor<?x8xf32>
      %xb4_1 = vector.broadcast %x4_1 : f32 to vector<32xf32>
      %n4_1_0 = vector.fma %xb4_1, %b4_0, %acc4_1_0 : vector<32xf32>
      %x4_2 = tensor.extract %x0[%v196, %k4] : tensor<?x8xf32>
      %xb4_2 = vector.broadcast %x4_2 : f32 to vector<32xf32>
      %n4_2_0 = vector.fma %xb4_2, %b4_0, %acc4_2_0 : vector<32xf32>
      %x4_3 = tensor.extract %x0[%v197, %k4] : tensor<?x8xf32>
      %xb4_3 = vector.broadcast %x4_3 : f32 to vector<32xf32>
      %n4_3_0 = vector.fma %xb4_3, %b4_0, %acc4_3_0 : vector<32xf32>
      scf.yield %n4_0_0, %n4_1_0, %n4_2_0, %n4_3_0 : vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>
    }
    %v200 = vector.transfer_read %e0[%c0], %v2, %v3 : tensor<24xf32>, vector<32xf32>
    %v201 = arith.addf %sum4#0, %v200 : vector<32xf32>
    %v203 = arith.cmpf olt, %v201, %v1 : vector<32xf32>
    %v202 = arith.select %v203, %v1, %v201 : vector<32xi1>, vector<32xf32>
    %v204 = vector.transfer_write %v202, %v163[%v158, %v198], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v205 = arith.addf %sum4#1, %v200 : vector<32xf32>
    %v207 = arith.cmpf olt, %v205, %v1 : vector<32xf32>
    %v206 = arith.select %v207, %v1, %v205 : vector<32xi1>, vector<32xf32>
    %v208 = vector.transfer_write %v206, %v204[%v191, %v198], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v209 = arith.addf %sum4#2, %v200 : vector<32xf32>
    %v211 = arith.cmpf olt, %v209, %v1 : vector<32xf32>
    %v210 = arith.select %v211, %v1, %v209 : vector<32xi1>, vector<32xf32>
    %v212 = vector.transfer_write %v210, %v208[%v192, %v198], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v213 = arith.addf %sum4#3, %v200 : vector<32xf32>
    %v215 = arith.cmpf olt, %v213, %v1 : vector<32xf32>
    %v214 = arith.select %v215, %v1, %v213 : vector<32xi1>, vector<32xf32>
    %v216 = vector.transfer_write %v214, %v212[%v193, %v198], %v3 : vector<32xf32>, tensor<?x?xf32>
    scf.yield %v216 : tensor<?x?xf32>
    } else {
      scf.yield %v163 : tensor<?x?xf32>
    }
    scf.yield %v190 : tensor<?x?xf32>
    }
    %v217 = arith.andi %v42, %c2 : index
    %v218 = arith.andi %v42, %cm4 : index
    %v219 = arith.addi %v43, %v218 : index
    %v220 = arith.addi %v219, %v217 : index
    %v223 = scf.for %v221 = %v219 to %v220 step %c2 iter_args(%v222 = %v160) -> (tensor<?x?xf32>) {
    %v226 = scf.for %v224 = %v35 to %v37 step %c32 iter_args(%v225 = %v222) -> (tensor<?x?xf32>) {
    %v227 = arith.addi %v221, %c1 : index
    %v228 = arith.addi %v26, %v221 : index
    %v229 = arith.addi %v228, %c1 : index
    %v230 = arith.subi %v224, %v35 : index
    %v231 = arith.divui %v224, %c32 : index
    %sum5:2 = scf.for %k5 = %c0 to %c8 step %c1 iter_args(%acc5_0_0 = %v1, %acc5_1_0 = %v1) -> (vector<32xf32>, vector<32xf32>) {
      %b5_0 = vector.transfer_read %x1[%v231, %k5, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %x5_0 = tensor.extract %x0[%v228, %k5] : tensor<?x8xf32>
      %xb5_0 = vector.broadcast %x5_0 : f32 to vector<32xf32>
      %n5_0_0 = vector.fma %xb5_0, %b5_0, %acc5_0_0 : vector<32xf32>
      %x5_1 = tensor.extract %x0[%v229, %k5] : tensor<?x8xf32>
      %xb5_1 = vector.broadcast %x5_1 : f32 to vector<32xf32>
      %n5_1_0 = vector.fma %xb5_1, %b5_0, %acc5_1_0 : vector<32xf32>
      scf.yield %n5_0_0, %n5_1_0 : vector<32xf32>, vector<32xf32>
    }
    %v232 = vector.transfer_read %e0[%v224], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<32xf32>
    %v233 = arith.addf %sum5#0, %v232 : vector<32xf32>
    %v235 = arith.cmpf olt, %v233, %v1 : vector<32xf32>
    %v234 = arith.select %v235, %v1, %v233 : vector<32xi1>, vector<32xf32>
    %v236 = vector.transfer_write %v234, %v225[%v221, %v230] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v237 = arith.addf %sum5#1, %v232 : vector<32xf32>
    %v239 = arith.cmpf olt, %v237, %v1 : vector<32xf32>
    %v238 = arith.select %v239, %v1, %v237 : vector<32xi1>, vector<32xf32>
    %v240 = vector.transfer_write %v238, %v236[%v227, %v230] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    scf.yield %v240 : tensor<?x?xf32>
    }
    %v241 = scf.if %v38 -> (tensor<?x?xf32>) {
    %v242 = arith.addi %v221, %c1 : index
    %v243 = arith.addi %v26, %v221 : index
    %v244 = arith.addi %v243, %c1 : index
    %v245 = arith.subi %c0, %v35 : index
    %v246 = arith.divui %c0, %c32 : index
    %sum6:2 = scf.for %k6 = %c0 to %c8 step %c1 iter_args(%acc6_0_0 = %v1, %acc6_1_0 = %v1) -> (vector<32xf32>, vector<32xf32>) {
      %b6_0 = vector.transfer_read %x1[%v246, %k6, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %x6_0 = tensor.extract %x0[%v243, %k6] : tensor<?x8xf32>
      %xb6_0 = vector.broadcast %x6_0 : f32 to vector<32xf32>
      %n6_0_0 = vector.fma %xb6_0, %b6_0, %acc6_0_0 : vector<32xf32>
      %x6_1 = tensor.extract %x0[%v244, %k6] : tensor<?x8xf32>
      %xb6_1 = vector.broadcast %x6_1 : f32 to vector<32xf32>
      %n6_1_0 = vector.fma %xb6_1, %b6_0, %acc6_1_0 : vector<32xf32>
      scf.yield %n6_0_0, %n6_1_0 : vector<32xf32>, vector<32xf32>
    }
    %v247 = vector.transfer_read %e0[%c0], %v2, %v3 : tensor<24xf32>, vector<32xf32>
    %v248 = arith.addf %sum6#0, %v247 : vector<32xf32>
    %v250 = arith.cmpf olt, %v248, %v1 : vector<32xf32>
    %v249 = arith.select %v250, %v1, %v248 : vector<32xi1>, vector<32xf32>
    %v251 = vector.transfer_write %v249, %v226[%v221, %v245], %v3 : vector<32xf32>, tensor<?x?xf32>
    %v252 = arith.addf %sum6#1, %v247 : vector<32xf32>
    %v254 = arith.cmpf olt, %v252, %v1 : vector<32xf32>
    %v253 = arith.select %v254, %v1, %v252 : vector<32xi1>, vector<32xf32>
    %v255 = vector.transfer_write %v253, %v251[%v242, %v245], %v3 : vector<32xf32>, tensor<?x?xf32>
    scf.yield %v255 : tensor<?x?xf32>
    } else {
      scf.yield %v226 : tensor<?x?xf32>
    }
    scf.yield %v241 : tensor<?x?xf32>
    }
    %v256 = arith.subi %v37, %v35 : index
    %v257 = arith.remui %v256, %c128 : index
    %v258 = arith.subi %v37, %v257 : index
    %v259 = arith.andi %v42, %cm2 : index
    %v260 = arith.addi %v43, %v259 : index
    %v263 = scf.for %v261 = %v260 to %v29 step %c1 iter_args(%v262 = %v223) -> (tensor<?x?xf32>) {
    %v266 = scf.for %v264 = %v35 to %v258 step %c128 iter_args(%v265 = %v262) -> (tensor<?x?xf32>) {
    %v267 = arith.addi %v26, %v261 : index
    %v268 = arith.addi %v264, %c32 : index
    %v269 = arith.addi %v264, %c64 : index
    %v270 = arith.addi %v264, %c96 : index
    %v271 = arith.subi %v264, %v35 : index
    %v272 = arith.addi %v271, %c32 : index
    %v273 = arith.addi %v271, %c64 : index
    %v274 = arith.addi %v271, %c96 : index
    %v275 = arith.divui %v264, %c32 : index
    %v276 = arith.divui %v268, %c32 : index
    %v277 = arith.divui %v269, %c32 : index
    %v278 = arith.divui %v270, %c32 : index
    %sum7:4 = scf.for %k7 = %c0 to %c8 step %c1 iter_args(%acc7_0_0 = %v1, %acc7_0_1 = %v1, %acc7_0_2 = %v1, %acc7_0_3 = %v1) -> (vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>) {
      %b7_0 = vector.transfer_read %x1[%v275, %k7, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %b7_1 = vector.transfer_read %x1[%v276, %k7, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %b7_2 = vector.transfer_read %x1[%v277, %k7, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %b7_3 = vector.transfer_read %x1[%v278, %k7, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %x7_0 = tensor.extract %x0[%v267, %k7] : tensor<?x8xf32>
      %xb7_0 = vector.broadcast %x7_0 : f32 to vector<32xf32>
      %n7_0_0 = vector.fma %xb7_0, %b7_0, %acc7_0_0 : vector<32xf32>
      %n7_0_1 = vector.fma %xb7_0, %b7_1, %acc7_0_1 : vector<32xf32>
      %n7_0_2 = vector.fma %xb7_0, %b7_2, %acc7_0_2 : vector<32xf32>
      %n7_0_3 = vector.fma %xb7_0, %b7_3, %acc7_0_3 : vector<32xf32>
      scf.yield %n7_0_0, %n7_0_1, %n7_0_2, %n7_0_3 : vector<32xf32>, vector<32xf32>, vector<32xf32>, vector<32xf32>
    }
    %v279 = vector.transfer_read %e0[%v264], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<32xf32>
    %v280 = vector.transfer_read %e0[%v268], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<32xf32>
    %v281 = vector.transfer_read %e0[%v269], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<32xf32>
    %v282 = vector.transfer_read %e0[%v270], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<32xf32>
    %v283 = arith.addf %sum7#0, %v279 : vector<32xf32>
    %v285 = arith.cmpf olt, %v283, %v1 : vector<32xf32>
    %v284 = arith.select %v285, %v1, %v283 : vector<32xi1>, vector<32xf32>
    %v286 = vector.transfer_write %v284, %v265[%v261, %v271] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v287 = arith.addf %sum7#1, %v280 : vector<32xf32>
    %v289 = arith.cmpf olt, %v287, %v1 : vector<32xf32>
    %v288 = arith.select %v289, %v1, %v287 : vector<32xi1>, vector<32xf32>
    %v290 = vector.transfer_write %v288, %v286[%v261, %v272] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v291 = arith.addf %sum7#2, %v281 : vector<32xf32>
    %v293 = arith.cmpf olt, %v291, %v1 : vector<32xf32>
    %v292 = arith.select %v293, %v1, %v291 : vector<32xi1>, vector<32xf32>
    %v294 = vector.transfer_write %v292, %v290[%v261, %v273] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    %v295 = arith.addf %sum7#3, %v282 : vector<32xf32>
    %v297 = arith.cmpf olt, %v295, %v1 : vector<32xf32>
    %v296 = arith.select %v297, %v1, %v295 : vector<32xi1>, vector<32xf32>
    %v298 = vector.transfer_write %v296, %v294[%v261, %v274] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    scf.yield %v298 : tensor<?x?xf32>
    }
    %v301 = scf.for %v299 = %v258 to %v37 step %c32 iter_args(%v300 = %v266) -> (tensor<?x?xf32>) {
    %v302 = arith.addi %v26, %v261 : index
    %v303 = arith.subi %v299, %v35 : index
    %v304 = arith.divui %v299, %c32 : index
    %sum8:1 = scf.for %k8 = %c0 to %c8 step %c1 iter_args(%acc8_0_0 = %v1) -> (vector<32xf32>) {
      %b8_0 = vector.transfer_read %x1[%v304, %k8, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %x8_0 = tensor.extract %x0[%v302, %k8] : tensor<?x8xf32>
      %xb8_0 = vector.broadcast %x8_0 : f32 to vector<32xf32>
      %n8_0_0 = vector.fma %xb8_0, %b8_0, %acc8_0_0 : vector<32xf32>
      scf.yield %n8_0_0 : vector<32xf32>
    }
    %v305 = vector.transfer_read %e0[%v299], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<32xf32>
    %v306 = arith.addf %sum8#0, %v305 : vector<32xf32>
    %v308 = arith.cmpf olt, %v306, %v1 : vector<32xf32>
    %v307 = arith.select %v308, %v1, %v306 : vector<32xi1>, vector<32xf32>
    %v309 = vector.transfer_write %v307, %v300[%v261, %v303] {in_bounds = [true]} : vector<32xf32>, tensor<?x?xf32>
    scf.yield %v309 : tensor<?x?xf32>
    }
    %v310 = scf.if %v38 -> (tensor<?x?xf32>) {
    %v311 = arith.addi %v26, %v261 : index
    %v312 = arith.subi %c0, %v35 : index
    %v313 = arith.divui %c0, %c32 : index
    %sum9:1 = scf.for %k9 = %c0 to %c8 step %c1 iter_args(%acc9_0_0 = %v1) -> (vector<32xf32>) {
      %b9_0 = vector.transfer_read %x1[%v313, %k9, %c0], %v2 {in_bounds = [true]} : tensor<1x8x32xf32>, vector<32xf32>
      %x9_0 = tensor.extract %x0[%v311, %k9] : tensor<?x8xf32>
      %xb9_0 = vector.broadcast %x9_0 : f32 to vector<32xf32>
      %n9_0_0 = vector.fma %xb9_0, %b9_0, %acc9_0_0 : vector<32xf32>
      scf.yield %n9_0_0 : vector<32xf32>
    }
    %v314 = vector.transfer_read %e0[%c0], %v2, %v3 : tensor<24xf32>, vector<32xf32>
    %v315 = arith.addf %sum9#0, %v314 : vector<32xf32>
    %v317 = arith.cmpf olt, %v315, %v1 : vector<32xf32>
    %v316 = arith.select %v317, %v1, %v315 : vector<32xi1>, vector<32xf32>
    %v318 = vector.transfer_write %v316, %v301[%v261, %v312], %v3 : vector<32xf32>, tensor<?x?xf32>
    scf.yield %v318 : tensor<?x?xf32>
    } else {
      scf.yield %v301 : tensor<?x?xf32>
    }
    scf.yield %v310 : tensor<?x?xf32>
    }
    scf.forall.in_parallel {
      tensor.parallel_insert_slice %v263 into %v23[%v26, %v35] [%v29, %v40] [1, 1] : tensor<?x?xf32> into tensor<?x24xf32>
    }
    }
    bufferization.materialize_in_destination %v24 in writable %dest : (tensor<?x24xf32>, memref<?x24xf32>) -> ()
    return
  }
  func.func @dense_relu_forgec_main(%in0: memref<?x8xf32>, %out0: memref<?x24xf32>) attributes {llvm.emit_c_interface} {
    %c0 = arith.constant 0 : index
    %sym_batch = memref.dim %in0, %c0 : memref<?x8xf32>
    %v1 = bufferization.to_tensor %in0 restrict : memref<?x8xf32> to tensor<?x8xf32>
    %v2 = arith.constant dense<"0xCDCCCCBDF4FDD4BCA69B443D0AD7A3BDA69BC4BB96438B3D8FC275BD4260653C5839B43D0AD723BD96430B3D1283C0BD0AD7A3BC1B2F5D3D508D97BD00000000508D973D1B2F5DBD0AD7A33C1283C03D96430BBD0AD7233D5839B4BD426065BC00000000000000000000000000000000000000000000000000000000000000008FC2753D96438BBDA69BC43B0AD7A33DA69B44BDF4FDD43CCDCCCC3D4260E5BC7F6A3C3D9EEFA7BD6F1203BC022B873DB6F37DBDA69B443CC520B03D31082CBD6F12033DA69BC4BD5839B4BCF4FD543DE3A59BBD6F1203BBBC74933D426065BD0000000000000000000000000000000000000000000000000000000000000000BC74933C7F6ABC3DBC7413BDE3A51B3DEC51B8BD6F1283BC68916D3D295C8FBD6F12833B77BE9F3DCDCC4CBDA69BC43C39B4C83D8FC2F5BC5839343D3108ACBD0AD723BC6F12833D6F1283BD0AD7233C3108AC3D583934BD8FC2F53C39B4C8BD0000000000000000000000000000000000000000000000000000000000000000A69BC4BCCDCC4C3D77BE9FBD6F1283BB295C8F3D68916DBD6F12833CEC51B83DE3A51BBDBC74133D7F6ABCBDBC7493BC4260653DBC7493BD6F12033BE3A59B3DF4FD54BD5839B43CA69BC43D6F1203BD31082C3DC520B0BDA69B44BCB6F37D3D0000000000000000000000000000000000000000000000000000000000000000022B87BD6F12033C9EEFA73D7F6A3CBD4260E53CCDCCCCBDF4FDD4BCA69B443D0AD7A3BDA69BC4BB96438B3D8FC275BD4260653C5839B43D0AD723BD96430B3D1283C0BD0AD7A3BC1B2F5D3D508D97BD00000000508D973D1B2F5DBD0AD7A33C00000000000000000000000000000000000000000000000000000000000000001283C03D96430BBD0AD7233D5839B4BD426065BC8FC2753D96438BBDA69BC43B0AD7A33DA69B44BDF4FDD43CCDCCCC3D4260E5BC7F6A3C3D9EEFA7BD6F1203BC022B873DB6F37DBDA69B443CC520B03D31082CBD6F12033DA69BC4BD5839B4BC0000000000000000000000000000000000000000000000000000000000000000F4FD543DE3A59BBD6F1203BBBC74933D426065BDBC74933C7F6ABC3DBC7413BDE3A51B3DEC51B8BD6F1283BC68916D3D295C8FBD6F12833B77BE9F3DCDCC4CBDA69BC43C39B4C83D8FC2F5BC5839343D3108ACBD0AD723BC6F12833D6F1283BD00000000000000000000000000000000000000000000000000000000000000000AD7233C3108AC3D583934BD8FC2F53C39B4C8BDA69BC4BCCDCC4C3D77BE9FBD6F1283BB295C8F3D68916DBD6F12833CEC51B83DE3A51BBDBC74133D7F6ABCBDBC7493BC4260653DBC7493BD6F12033BE3A59B3DF4FD54BD5839B43CA69BC43D0000000000000000000000000000000000000000000000000000000000000000"> : tensor<1x8x32xf32>
    %v3 = arith.constant dense<"0x9A9999BECDCC4CBECDCCCCBD00000000CDCCCC3DCDCC4C3E9A99993E9A9999BECDCC4CBECDCCCCBD00000000CDCCCC3DCDCC4C3E9A99993E9A9999BECDCC4CBECDCCCCBD00000000CDCCCC3DCDCC4C3E9A99993E9A9999BECDCC4CBECDCCCCBD"> : tensor<24xf32>
    func.call @op2(%sym_batch, %v1, %v2, %v3, %out0) : (index, tensor<?x8xf32>, tensor<1x8x32xf32>, tensor<24xf32>, memref<?x24xf32>) -> ()
    return
  }
  func.func private @forgec_threads() -> index
}
