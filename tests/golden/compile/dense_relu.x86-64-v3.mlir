module {
  func.func private @op2(%s0: index, %x0: tensor<?x8xf32>, %x1: tensor<2x8x16xf32>, %e0: tensor<24xf32>, %dest: memref<?x24xf32>) -> () attributes {passthrough = ["noinline"]} {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c8 = arith.constant 8 : index
    %c16 = arith.constant 16 : index
    %c6 = arith.constant 6 : index
    %c64 = arith.constant 64 : index
    %c171 = arith.constant 171 : index
    %c24 = arith.constant 24 : index
    %c2 = arith.constant 2 : index
    %c3 = arith.constant 3 : index
    %c4 = arith.constant 4 : index
    %c5 = arith.constant 5 : index
    %cm8 = arith.constant -8 : index
    %cm4 = arith.constant -4 : index
    %cm2 = arith.constant -2 : index
    %c32 = arith.constant 32 : index
    %c48 = arith.constant 48 : index
    %destt = bufferization.to_tensor %dest restrict writable : memref<?x24xf32> to tensor<?x24xf32>
    %v1 = arith.constant dense<0.0> : vector<16xf32>
    %v2 = arith.constant 0.0 : f32
    %v3 = vector.create_mask %c8 : vector<16xi1>
    %v4 = func.call @forgec_threads() : () -> index
    %v5 = arith.ceildivui %s0, %c6 : index
    %v6 = arith.divui %s0, %c171 : index
    %v7 = arith.minui %v4, %v5 : index
    %v8 = arith.minui %v7, %v6 : index
    %v9 = arith.maxui %v8, %c1 : index
    %v10 = arith.ceildivui %v5, %v9 : index
    %v11 = arith.muli %v10, %c6 : index
    %v12 = arith.maxui %v11, %c1 : index
    %v13 = arith.divui %v4, %v9 : index
    %v14 = arith.muli %s0, %c2 : index
    %v15 = arith.muli %c171, %v9 : index
    %v16 = arith.divui %v14, %v15 : index
    %v17 = arith.minui %v13, %c2 : index
    %v18 = arith.minui %v17, %v16 : index
    %v19 = arith.maxui %v18, %c1 : index
    %v20 = arith.ceildivui %c2, %v19 : index
    %v24 = scf.forall (%v21, %v22) in (%v9, %v19) shared_outs(%v23 = %destt) -> (tensor<?x24xf32>) {
    %v25 = arith.muli %v21, %v12 : index
    %v26 = arith.minui %v25, %s0 : index
    %v27 = arith.addi %v26, %v12 : index
    %v28 = arith.minui %v27, %s0 : index
    %v29 = arith.subi %v28, %v26 : index
    %v30 = arith.muli %v22, %v20 : index
    %v31 = arith.minui %v30, %c2 : index
    %v32 = arith.addi %v31, %v20 : index
    %v33 = arith.minui %v32, %c2 : index
    %v34 = arith.subi %v33, %v31 : index
    %v35 = arith.muli %v31, %c16 : index
    %v36 = arith.muli %v33, %c16 : index
    %v37 = arith.minui %v36, %c16 : index
    %v38 = arith.cmpi eq, %v33, %c2 : index
    %v39 = arith.select %v38, %c24, %v37 : index
    %v40 = arith.subi %v39, %v35 : index
    %v41 = tensor.extract_slice %v23[%v26, %v35] [%v29, %v40] [1, 1] : tensor<?x24xf32> to tensor<?x?xf32>
    %v42 = arith.remui %v29, %c6 : index
    %v43 = arith.subi %v29, %v42 : index
    %v46 = scf.for %v44 = %v35 to %v37 step %c16 iter_args(%v45 = %v41) -> (tensor<?x?xf32>) {
    %v49 = scf.for %v47 = %c0 to %v43 step %c6 iter_args(%v48 = %v45) -> (tensor<?x?xf32>) {
    %v50 = arith.addi %v47, %c1 : index
    %v51 = arith.addi %v47, %c2 : index
    %v52 = arith.addi %v47, %c3 : index
    %v53 = arith.addi %v47, %c4 : index
    %v54 = arith.addi %v47, %c5 : index
    %v55 = arith.addi %v26, %v47 : index
    %v56 = arith.addi %v55, %c1 : index
    %v57 = arith.addi %v55, %c2 : index
    %v58 = arith.addi %v55, %c3 : index
    %v59 = arith.addi %v55, %c4 : index
    %v60 = arith.addi %v55, %c5 : index
    %v61 = arith.subi %v44, %v35 : index
    %v62 = arith.divui %v44, %c16 : index
    %sum1:6 = scf.for %k1 = %c0 to %c8 step %c1 iter_args(%acc1_0_0 = %v1, %acc1_1_0 = %v1, %acc1_2_0 = %v1, %acc1_3_0 = %v1, %acc1_4_0 = %v1, %acc1_5_0 = %v1) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
      %b1_0 = vector.transfer_read %x1[%v62, %k1, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %x1_0 = tensor.extract %x0[%v55, %k1] : tensor<?x8xf32>
      %xb1_0 = vector.broadcast %x1_0 : f32 to vector<16xf32>
      %n1_0_0 = vector.fma %xb1_0, %b1_0, %acc1_0_0 : vector<16xf32>
      %x1_1 = tensor.extract %x0[%v56, %k1] : tensor<?x8xf32>
      %xb1_1 = vector.broadcast %x1_1 : f32 to vector<16xf32>
      %n1_1_0 = vector.fma %xb1_1, %b1_0, %acc1_1_0 : vector<16xf32>
      %x1_2 = tensor.extract %x0[%v57, %k1] : tensor<?x8xf32>
      %xb1_2 = vector.broadcast %x1_2 : f32 to vector<16xf32>
      %n1_2_0 = vector.fma %xb1_2, %b1_0, %acc1_2_0 : vector<16xf32>
      %x1_3 = tensor.extract %x0[%v58, %k1] : tensor<?x8xf32>
      %xb1_3 = vector.broadcast %x1_3 : f32 to vector<16xf32>
      %n1_3_0 = vector.fma %xb1_3, %b1_0, %acc1_3_0 : vector<16xf32>
      %x1_4 = tensor.extract %x0[%v59, %k1] : tensor<?x8xf32>
      %xb1_4 = vector.broadcast %x1_4 : f32 to vector<16xf32>
      %n1_4_0 = vector.fma %xb1_4, %b1_0, %acc1_4_0 : vector<16xf32>
      %x1_5 = tensor.extract %x0[%v60, %k1] : tensor<?x8xf32>
      %xb1_5 = vector.broadcast %x1_5 : f32 to vector<16xf32>
      %n1_5_0 = vector.fma %xb1_5, %b1_0, %acc1_5_0 : vector<16xf32>
      scf.yield %n1_0_0, %n1_1_0, %n1_2_0, %n1_3_0, %n1_4_0, %n1_5_0 : vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>
    }
    %v63 = vector.transfer_read %e0[%v44], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<16xf32>
    %v64 = arith.addf %sum1#0, %v63 : vector<16xf32>
    %v66 = arith.cmpf olt, %v64, %v1 : vector<16xf32>
    %v65 = arith.select %v66, %v1, %v64 : vector<16xi1>, vector<16xf32>
    %v67 = vector.transfer_write %v65, %v48[%v47, %v61] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v68 = arith.addf %sum1#1, %v63 : vector<16xf32>
    %v70 = arith.cmpf olt, %v68, %v1 : vector<16xf32>
    %v69 = arith.select %v70, %v1, %v68 : vector<16xi1>, vector<16xf32>
    %v71 = vector.transfer_write %v69, %v67[%v50, %v61] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v72 = arith.addf %sum1#2, %v63 : vector<16xf32>
    %v74 = arith.cmpf olt, %v72, %v1 : vector<16xf32>
    %v73 = arith.select %v74, %v1, %v72 : vector<16xi1>, vector<16xf32>
    %v75 = vector.transfer_write %v73, %v71[%v51, %v61] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v76 = arith.addf %sum1#3, %v63 : vector<16xf32>
    %v78 = arith.cmpf olt, %v76, %v1 : vector<16xf32>
    %v77 = arith.select %v78, %v1, %v76 : vector<16xi1>, vector<16xf32>
    %v79 = vector.transfer_write %v77, %v75[%v52, %v61] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v80 = arith.addf %sum1#4, %v63 : vector<16xf32>
    %v82 = arith.cmpf olt, %v80, %v1 : vector<16xf32>
    %v81 = arith.select %v82, %v1, %v80 : vector<16xi1>, vector<16xf32>
    %v83 = vector.transfer_write %v81, %v79[%v53, %v61] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v84 = arith.addf %sum1#5, %v63 : vector<16xf32>
    %v86 = arith.cmpf olt, %v84, %v1 : vector<16xf32>
    %v85 = arith.select %v86, %v1, %v84 : vector<16xi1>, vector<16xf32>
    %v87 = vector.transfer_write %v85, %v83[%v54, %v61] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    scf.yield %v87 : tensor<?x?xf32>
    }
    scf.yield %v49 : tensor<?x?xf32>
    }
    %v88 = scf.if %v38 -> (tensor<?x?xf32>) {
    %v91 = scf.for %v89 = %c0 to %v43 step %c6 iter_args(%v90 = %v46) -> (tensor<?x?xf32>) {
    %v92 = arith.addi %v89, %c1 : index
    %v93 = arith.addi %v89, %c2 : index
    %v94 = arith.addi %v89, %c3 : index
    %v95 = arith.addi %v89, %c4 : index
    %v96 = arith.addi %v89, %c5 : index
    %v97 = arith.addi %v26, %v89 : index
    %v98 = arith.addi %v97, %c1 : index
    %v99 = arith.addi %v97, %c2 : index
    %v100 = arith.addi %v97, %c3 : index
    %v101 = arith.addi %v97, %c4 : index
    %v102 = arith.addi %v97, %c5 : index
    %v103 = arith.subi %c16, %v35 : index
    %v104 = arith.divui %c16, %c16 : index
    %sum2:6 = scf.for %k2 = %c0 to %c8 step %c1 iter_args(%acc2_0_0 = %v1, %acc2_1_0 = %v1, %acc2_2_0 = %v1, %acc2_3_0 = %v1, %acc2_4_0 = %v1, %acc2_5_0 = %v1) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
      %b2_0 = vector.transfer_read %x1[%v104, %k2, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %x2_0 = tensor.extract %x0[%v97, %k2] : tensor<?x8xf32>
      %xb2_0 = vector.broadcast %x2_0 : f32 to vector<16xf32>
      %n2_0_0 = vector.fma %xb2_0, %b2_0, %acc2_0_0 : vector<16xf32>
      %x2_1 = tensor.extract %x0[%v98, %k2] : tensor<?x8xf32>
      %xb2_1 = vector.broadcast %x2_1 : f32 to vector<16xf32>
      %n2_1_0 = vector.fma %xb2_1, %b2_0, %acc2_1_0 : vector<16xf32>
      %x2_2 = tensor.extract %x0[%v99, %k2] : tensor<?x8xf32>
      %xb2_2 = vector.broadcast %x2_2 : f32 to vector<16xf32>
      %n2_2_0 = vector.fma %xb2_2, %b2_0, %acc2_2_0 : vector<16xf32>
      %x2_3 = tensor.extract %x0[%v100, %k2] : tensor<?x8xf32>
      %xb2_3 = vector.broadcast %x2_3 : f32 to vector<16xf32>
      %n2_3_0 = vector.fma %xb2_3, %b2_0, %acc2_3_0 : vector<16xf32>
      %x2_4 = tensor.extract %x0[%v101, %k2] : tensor<?x8xf32>
      %xb2_4 = vector.broadcast %x2_4 : f32 to vector<16xf32>
      %n2_4_0 = vector.fma %xb2_4, %b2_0, %acc2_4_0 : vector<16xf32>
      %x2_5 = tensor.extract %x0[%v102, %k2] : tensor<?x8xf32>
      %xb2_5 = vector.broadcast %x2_5 : f32 to vector<16xf32>
      %n2_5_0 = vector.fma %xb2_5, %b2_0, %acc2_5_0 : vector<16xf32>
      scf.yield %n2_0_0, %n2_1_0, %n2_2_0, %n2_3_0, %n2_4_0, %n2_5_0 : vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>
    }
    %v105 = vector.transfer_read %e0[%c16], %v2, %v3 : tensor<24xf32>, vector<16xf32>
    %v106 = arith.addf %sum2#0, %v105 : vector<16xf32>
    %v108 = arith.cmpf olt, %v106, %v1 : vector<16xf32>
    %v107 = arith.select %v108, %v1, %v106 : vector<16xi1>, vector<16xf32>
    %v109 = vector.transfer_write %v107, %v90[%v89, %v103], %v3 : vector<16xf32>, tensor<?x?xf32>
    %v110 = arith.addf %sum2#1, %v105 : vector<16xf32>
    %v112 = arith.cmpf olt, %v110, %v1 : vector<16xf32>
    %v111 = arith.select %v112, %v1, %v110 : vector<16xi1>, vector<16xf32>
    %v113 = vector.transfer_write %v111, %v109[%v92, %v103], %v3 : vector<16xf32>, tensor<?x?xf32>
    %v114 = arith.addf %sum2#2, %v105 : vector<16xf32>
    %v116 = arith.cmpf olt, %v114, %v1 : vector<16xf32>
    %v115 = arith.select %v116, %v1, %v114 : vector<16xi1>, vector<16xf32>
    %v117 = vector.transfer_write %v115, %v113[%v93, %v103], %v3 : vector<16xf32>, tensor<?x?xf32>
    %v118 = arith.addf %sum2#3, %v105 : vector<16xf32>
    %v120 = arith.cmpf olt, %v118, %v1 : vector<16xf32>
    %v119 = arith.select %v120, %v1, %v118 : vector<16xi1>, vector<16xf32>
    %v121 = vector.transfer_write %v119, %v117[%v94, %v103], %v3 : vector<16xf32>, tensor<?x?xf32>
    %v122 = arith.addf %sum2#4, %v105 : vector<16xf32>
    %v124 = arith.cmpf olt, %v122, %v1 : vector<16xf32>
    %v123 = arith.select %v124, %v1, %v122 : vector<16xi1>, vector<16xf32>
    %v125 = vector.transfer_write %v123, %v121[%v95, %v103], %v3 : vector<16xf32>, tensor<?x?xf32>
    %v126 = arith.addf %sum2#5, %v105 : vector<16xf32>
    %v128 = arith.cmpf olt, %v126, %v1 : vector<16xf32>
    %v127 = arith.select %v128, %v1, %v126 : vector<16xi1>, vector<16xf32>
    %v129 = vector.transfer_write %v127, %v125[%v96, %v103], %v3 : vector<16xf32>, tensor<?x?xf32>
    scf.yield %v129 : tensor<?x?xf32>
    }
    scf.yield %v91 : tensor<?x?xf32>
    } else {
      scf.yield %v46 : tensor<?x?xf32>
    }
    %v130 = arith.andi %v42, %c4 : index
    %v131 = arith.andi %v42, %cm8 : index
    %v132 = arith.addi %v43, %v131 : index
    %v133 = arith.addi %v132, %v130 : index
    %v136 = scf.for %v134 = %v132 to %v133 step %c4 iter_args(%v135 = %v88) -> (tensor<?x?xf32>) {
    %v139 = scf.for %v137 = %v35 to %v37 step %c16 iter_args(%v138 = %v135) -> (tensor<?x?xf32>) {
    %v140 = arith.addi %v134, %c1 : index
    %v141 = arith.addi %v134, %c2 : index
    %v142 = arith.addi %v134, %c3 : index
    %v143 = arith.addi %v26, %v134 : index
    %v144 = arith.addi %v143, %c1 : index
    %v145 = arith.addi %v143, %c2 : index
    %v146 = arith.addi %v143, %c3 : index
    %v147 = arith.subi %v137, %v35 : index
    %v148 = arith.divui %v137, %c16 : index
    %sum3:4 = scf.for %k3 = %c0 to %c8 step %c1 iter_args(%acc3_0_0 = %v1, %acc3_1_0 = %v1, %acc3_2_0 = %v1, %acc3_3_0 = %v1) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
      %b3_0 = vector.transfer_read %x1[%v148, %k3, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %x3_0 = tensor.extract %x0[%v143, %k3] : tensor<?x8xf32>
      %xb3_0 = vector.broadcast %x3_0 : f32 to vector<16xf32>
      %n3_0_0 = vector.fma %xb3_0, %b3_0, %acc3_0_0 : vector<16xf32>
      %x3_1 = tensor.extract %x0[%v144, %k3] : tensor<?x8xf32>
      %xb3_1 = vector.broadcast %x3_1 : f32 to vector<16xf32>
      %n3_1_0 = vector.fma %xb3_1, %b3_0, %acc3_1_0 : vector<16xf32>
      %x3_2 = tensor.extract %x0[%v145, %k3] : tensor<?x8xf32>
      %xb3_2 = vector.broadcast %x3_2 : f32 to vector<16xf32>
      %n3_2_0 = vector.fma %xb3_2, %b3_0, %acc3_2_0 : vector<16xf32>
      %x3_3 = tensor.extract %x0[%v146, %k3] : tensor<?x8xf32>
      %xb3_3 = vector.broadcast %x3_3 : f32 to vector<16xf32>
      %n3_3_0 = vector.fma %xb3_3, %b3_0, %acc3_3_0 : vector<16xf32>
      scf.yield %n3_0_0, %n3_1_0, %n3_2_0, %n3_3_0 : vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>
    }
    %v149 = vector.transfer_read %e0[%v137], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<16xf32>
    %v150 = arith.addf %sum3#0, %v149 : vector<16xf32>
    %v152 = arith.cmpf olt, %v150, %v1 : vector<16xf32>
    %v151 = arith.select %v152, %v1, %v150 : vector<16xi1>, vector<16xf32>
    %v153 = vector.transfer_write %v151, %v138[%v134, %v147] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v154 = arith.addf %sum3#1, %v149 : vector<16xf32>
    %v156 = arith.cmpf olt, %v154, %v1 : vector<16xf32>
    %v155 = arith.select %v156, %v1, %v154 : vector<16xi1>, vector<16xf32>
    %v157 = vector.transfer_write %v155, %v153[%v140, %v147] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v158 = arith.addf %sum3#2, %v149 : vector<16xf32>
    %v160 = arith.cmpf olt, %v158, %v1 : vector<16xf32>
    %v159 = arith.select %v160, %v1, %v158 : vector<16xi1>, vector<16xf32>
    %v161 = vector.transfer_write %v159, %v157[%v141, %v147] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v162 = arith.addf %sum3#3, %v149 : vector<16xf32>
    %v164 = arith.cmpf olt, %v162, %v1 : vector<16xf32>
    %v163 = arith.select %v164, %v1, %v162 : vector<16xi1>, vector<16xf32>
    %v165 = vector.transfer_write %v163, %v161[%v142, %v147] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    scf.yield %v165 : tensor<?x?xf32>
    }
    %v166 = scf.if %v38 -> (tensor<?x?xf32>) {
    %v167 = arith.addi %v134, %c1 : index
    %v168 = arith.addi %v134, %c2 : index
    %v169 = arith.addi %v134, %c3 : index
    %v170 = arith.addi %v26, %v134 : index
    %v171 = arith.addi %v170, %c1 : index
    %v172 = arith.addi %v170, %c2 : index
    %v173 = arith.addi %v170, %c3 : index
    %v174 = arith.subi %c16, %v35 : index
    %v175 = arith.divui %c16, %c16 : index
    %sum4:4 = scf.for %k4 = %c0 to %c8 step %c1 iter_args(%acc4_0_0 = %v1, %acc4_1_0 = %v1, %acc4_2_0 = %v1, %acc4_3_0 = %v1) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
      %b4_0 = vector.transfer_read %x1[%v175, %k4, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %x4_0 = tensor.extract %x0[%v170, %k4] : tensor<?x8xf32>
      %xb4_0 = vector.broadcast %x4_0 : f32 to vector<16xf32>
      %n4_0_0 = vector.fma %xb4_0, %b4_0, %acc4_0_0 : vector<16xf32>
      %x4_1 = tensor.extract %x0[%v171, %k4] : tensor<?x8xf32>
      %xb4_1 = vector.broadcast %x4_1 : f32 to vector<16xf32>
      %n4_1_0 = vector.fma %xb4_1, %b4_0, %acc4_1_0 : vector<16xf32>
      %x4_2 = tensor.extract %x0[%v172, %k4] : tensor<?x8xf32>
      %xb4_2 = vector.broadcast %x4_2 : f32 to vector<16xf32>
      %n4_2_0 = vector.fma %xb4_2, %b4_0, %acc4_2_0 : vector<16xf32>
      %x4_3 = tensor.extract %x0[%v173, %k4] : tensor<?x8xf32>
      %xb4_3 = vector.broadcast %x4_3 : f32 to vector<16xf32>
      %n4_3_0 = vector.fma %xb4_3, %b4_0, %acc4_3_0 : vector<16xf32>
      scf.yield %n4_0_0, %n4_1_0, %n4_2_0, %n4_3_0 : vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>
    }
    %v176 = vector.transfer_read %e0[%c16], %v2, %v3 : tensor<24xf32>, vector<16xf32>
    %v177 = arith.addf %sum4#0, %v176 : vector<16xf32>
    %v179 = arith.cmpf olt, %v177, %v1 : vector<16xf32>
    %v178 = arith.select %v179, %v1, %v177 : vector<16xi1>, vector<16xf32>
    %v180 = vector.transfer_write %v178, %v139[%v134, %v174], %v3 : vector<16xf32>, tensor<?x?xf32>
    %v181 = arith.addf %sum4#1, %v176 : vector<16xf32>
    %v183 = arith.cmpf olt, %v181, %v1 : vector<16xf32>
    %v182 = arith.select %v183, %v1, %v181 : vector<16xi1>, vector<16xf32>
    %v184 = vector.transfer_write %v182, %v180[%v167, %v174], %v3 : vector<16xf32>, tensor<?x?xf32>
    %v185 = arith.addf %sum4#2, %v176 : vector<16xf32>
    %v187 = arith.cmpf olt, %v185, %v1 : vector<16xf32>
    %v186 = arith.select %v187, %v1, %v185 : vector<16xi1>, vector<16xf32>
    %v188 = vector.transfer_write %v186, %v184[%v168, %v174], %v3 : vector<16xf32>, tensor<?x?xf32>
    %v189 = arith.addf %sum4#3, %v176 : vector<16xf32>
    %v191 = arith.cmpf olt, %v189, %v1 : vector<16xf32>
    %v190 = arith.select %v191, %v1, %v189 : vector<16xi1>, vector<16xf32>
    %v192 = vector.transfer_write %v190, %v188[%v169, %v174], %v3 : vector<16xf32>, tensor<?x?xf32>
    scf.yield %v192 : tensor<?x?xf32>
    } else {
      scf.yield %v139 : tensor<?x?xf32>
    }
    scf.yield %v166 : tensor<?x?xf32>
    }
    %v193 = arith.andi %v42, %c2 : index
    %v194 = arith.andi %v42, %cm4 : index
    %v195 = arith.addi %v43, %v194 : index
    %v196 = arith.addi %v195, %v193 : index
    %v199 = scf.for %v197 = %v195 to %v196 step %c2 iter_args(%v198 = %v136) -> (tensor<?x?xf32>) {
    %v202 = scf.for %v200 = %v35 to %v37 step %c16 iter_args(%v201 = %v198) -> (tensor<?x?xf32>) {
    %v203 = arith.addi %v197, %c1 : index
    %v204 = arith.addi %v26, %v197 : index
    %v205 = arith.addi %v204, %c1 : index
    %v206 = arith.subi %v200, %v35 : index
    %v207 = arith.divui %v200, %c16 : index
    %sum5:2 = scf.for %k5 = %c0 to %c8 step %c1 iter_args(%acc5_0_0 = %v1, %acc5_1_0 = %v1) -> (vector<16xf32>, vector<16xf32>) {
      %b5_0 = vector.transfer_read %x1[%v207, %k5, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %x5_0 = tensor.extract %x0[%v204, %k5] : tensor<?x8xf32>
      %xb5_0 = vector.broadcast %x5_0 : f32 to vector<16xf32>
      %n5_0_0 = vector.fma %xb5_0, %b5_0, %acc5_0_0 : vector<16xf32>
      %x5_1 = tensor.extract %x0[%v205, %k5] : tensor<?x8xf32>
      %xb5_1 = vector.broadcast %x5_1 : f32 to vector<16xf32>
      %n5_1_0 = vector.fma %xb5_1, %b5_0, %acc5_1_0 : vector<16xf32>
      scf.yield %n5_0_0, %n5_1_0 : vector<16xf32>, vector<16xf32>
    }
    %v208 = vector.transfer_read %e0[%v200], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<16xf32>
    %v209 = arith.addf %sum5#0, %v208 : vector<16xf32>
    %v211 = arith.cmpf olt, %v209, %v1 : vector<16xf32>
    %v210 = arith.select %v211, %v1, %v209 : vector<16xi1>, vector<16xf32>
    %v212 = vector.transfer_write %v210, %v201[%v197, %v206] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v213 = arith.addf %sum5#1, %v208 : vector<16xf32>
    %v215 = arith.cmpf olt, %v213, %v1 : vector<16xf32>
    %v214 = arith.select %v215, %v1, %v213 : vector<16xi1>, vector<16xf32>
    %v216 = vector.transfer_write %v214, %v212[%v203, %v206] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    scf.yield %v216 : tensor<?x?xf32>
    }
    %v217 = scf.if %v38 -> (tensor<?x?xf32>) {
    %v218 = arith.addi %v197, %c1 : index
    %v219 = arith.addi %v26, %v197 : index
    %v220 = arith.addi %v219, %c1 : index
    %v221 = arith.subi %c16, %v35 : index
    %v222 = arith.divui %c16, %c16 : index
    %sum6:2 = scf.for %k6 = %c0 to %c8 step %c1 iter_args(%acc6_0_0 = %v1, %acc6_1_0 = %v1) -> (vector<16xf32>, vector<16xf32>) {
      %b6_0 = vector.transfer_read %x1[%v222, %k6, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %x6_0 = tensor.extract %x0[%v219, %k6] : tensor<?x8xf32>
      %xb6_0 = vector.broadcast %x6_0 : f32 to vector<16xf32>
      %n6_0_0 = vector.fma %xb6_0, %b6_0, %acc6_0_0 : vector<16xf32>
      %x6_1 = tensor.extract %x0[%v220, %k6] : tensor<?x8xf32>
      %xb6_1 = vector.broadcast %x6_1 : f32 to vector<16xf32>
      %n6_1_0 = vector.fma %xb6_1, %b6_0, %acc6_1_0 : vector<16xf32>
      scf.yield %n6_0_0, %n6_1_0 : vector<16xf32>, vector<16xf32>
    }
    %v223 = vector.transfer_read %e0[%c16], %v2, %v3 : tensor<24xf32>, vector<16xf32>
    %v224 = arith.addf %sum6#0, %v223 : vector<16xf32>
    %v226 = arith.cmpf olt, %v224, %v1 : vector<16xf32>
    %v225 = arith.select %v226, %v1, %v224 : vector<16xi1>, vector<16xf32>
    %v227 = vector.transfer_write %v225, %v202[%v197, %v221], %v3 : vector<16xf32>, tensor<?x?xf32>
    %v228 = arith.addf %sum6#1, %v223 : vector<16xf32>
    %v230 = arith.cmpf olt, %v228, %v1 : vector<16xf32>
    %v229 = arith.select %v230, %v1, %v228 : vector<16xi1>, vector<16xf32>
    %v231 = vector.transfer_write %v229, %v227[%v218, %v221], %v3 : vector<16xf32>, tensor<?x?xf32>
    scf.yield %v231 : tensor<?x?xf32>
    } else {
      scf.yield %v202 : tensor<?x?xf32>
    }
    scf.yield %v217 : tensor<?x?xf32>
    }
    %v232 = arith.subi %v37, %v35 : index
    %v233 = arith.remui %v232, %c64 : index
    %v234 = arith.subi %v37, %v233 : index
    %v235 = arith.andi %v42, %cm2 : index
    %v236 = arith.addi %v43, %v235 : index
    %v239 = scf.for %v237 = %v236 to %v29 step %c1 iter_args(%v238 = %v199) -> (tensor<?x?xf32>) {
    %v242 = scf.for %v240 = %v35 to %v234 step %c64 iter_args(%v241 = %v238) -> (tensor<?x?xf32>) {
    %v243 = arith.addi %v26, %v237 : index
    %v244 = arith.addi %v240, %c16 : index
    %v245 = arith.addi %v240, %c32 : index
    %v246 = arith.addi %v240, %c48 : index
    %v247 = arith.subi %v240, %v35 : index
    %v248 = arith.addi %v247, %c16 : index
    %v249 = arith.addi %v247, %c32 : index
    %v250 = arith.addi %v247, %c48 : index
    %v251 = arith.divui %v240, %c16 : index
    %v252 = arith.divui %v244, %c16 : index
    %v253 = arith.divui %v245, %c16 : index
    %v254 = arith.divui %v246, %c16 : index
    %sum7:4 = scf.for %k7 = %c0 to %c8 step %c1 iter_args(%acc7_0_0 = %v1, %acc7_0_1 = %v1, %acc7_0_2 = %v1, %acc7_0_3 = %v1) -> (vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>) {
      %b7_0 = vector.transfer_read %x1[%v251, %k7, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %b7_1 = vector.transfer_read %x1[%v252, %k7, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %b7_2 = vector.transfer_read %x1[%v253, %k7, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %b7_3 = vector.transfer_read %x1[%v254, %k7, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %x7_0 = tensor.extract %x0[%v243, %k7] : tensor<?x8xf32>
      %xb7_0 = vector.broadcast %x7_0 : f32 to vector<16xf32>
      %n7_0_0 = vector.fma %xb7_0, %b7_0, %acc7_0_0 : vector<16xf32>
      %n7_0_1 = vector.fma %xb7_0, %b7_1, %acc7_0_1 : vector<16xf32>
      %n7_0_2 = vector.fma %xb7_0, %b7_2, %acc7_0_2 : vector<16xf32>
      %n7_0_3 = vector.fma %xb7_0, %b7_3, %acc7_0_3 : vector<16xf32>
      scf.yield %n7_0_0, %n7_0_1, %n7_0_2, %n7_0_3 : vector<16xf32>, vector<16xf32>, vector<16xf32>, vector<16xf32>
    }
    %v255 = vector.transfer_read %e0[%v240], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<16xf32>
    %v256 = vector.transfer_read %e0[%v244], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<16xf32>
    %v257 = vector.transfer_read %e0[%v245], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<16xf32>
    %v258 = vector.transfer_read %e0[%v246], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<16xf32>
    %v259 = arith.addf %sum7#0, %v255 : vector<16xf32>
    %v261 = arith.cmpf olt, %v259, %v1 : vector<16xf32>
    %v260 = arith.select %v261, %v1, %v259 : vector<16xi1>, vector<16xf32>
    %v262 = vector.transfer_write %v260, %v241[%v237, %v247] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v263 = arith.addf %sum7#1, %v256 : vector<16xf32>
    %v265 = arith.cmpf olt, %v263, %v1 : vector<16xf32>
    %v264 = arith.select %v265, %v1, %v263 : vector<16xi1>, vector<16xf32>
    %v266 = vector.transfer_write %v264, %v262[%v237, %v248] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v267 = arith.addf %sum7#2, %v257 : vector<16xf32>
    %v269 = arith.cmpf olt, %v267, %v1 : vector<16xf32>
    %v268 = arith.select %v269, %v1, %v267 : vector<16xi1>, vector<16xf32>
    %v270 = vector.transfer_write %v268, %v266[%v237, %v249] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    %v271 = arith.addf %sum7#3, %v258 : vector<16xf32>
    %v273 = arith.cmpf olt, %v271, %v1 : vector<16xf32>
    %v272 = arith.select %v273, %v1, %v271 : vector<16xi1>, vector<16xf32>
    %v274 = vector.transfer_write %v272, %v270[%v237, %v250] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    scf.yield %v274 : tensor<?x?xf32>
    }
    %v277 = scf.for %v275 = %v234 to %v37 step %c16 iter_args(%v276 = %v242) -> (tensor<?x?xf32>) {
    %v278 = arith.addi %v26, %v237 : index
    %v279 = arith.subi %v275, %v35 : index
    %v280 = arith.divui %v275, %c16 : index
    %sum8:1 = scf.for %k8 = %c0 to %c8 step %c1 iter_args(%acc8_0_0 = %v1) -> (vector<16xf32>) {
      %b8_0 = vector.transfer_read %x1[%v280, %k8, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %x8_0 = tensor.extract %x0[%v278, %k8] : tensor<?x8xf32>
      %xb8_0 = vector.broadcast %x8_0 : f32 to vector<16xf32>
      %n8_0_0 = vector.fma %xb8_0, %b8_0, %acc8_0_0 : vector<16xf32>
      scf.yield %n8_0_0 : vector<16xf32>
    }
    %v281 = vector.transfer_read %e0[%v275], %v2 {in_bounds = [true]} : tensor<24xf32>, vector<16xf32>
    %v282 = arith.addf %sum8#0, %v281 : vector<16xf32>
    %v284 = arith.cmpf olt, %v282, %v1 : vector<16xf32>
    %v283 = arith.select %v284, %v1, %v282 : vector<16xi1>, vector<16xf32>
    %v285 = vector.transfer_write %v283, %v276[%v237, %v279] {in_bounds = [true]} : vector<16xf32>, tensor<?x?xf32>
    scf.yield %v285 : tensor<?x?xf32>
    }
    %v286 = scf.if %v38 -> (tensor<?x?xf32>) {
    %v287 = arith.addi %v26, %v237 : index
    %v288 = arith.subi %c16, %v35 : index
    %v289 = arith.divui %c16, %c16 : index
    %sum9:1 = scf.for %k9 = %c0 to %c8 step %c1 iter_args(%acc9_0_0 = %v1) -> (vector<16xf32>) {
      %b9_0 = vector.transfer_read %x1[%v289, %k9, %c0], %v2 {in_bounds = [true]} : tensor<2x8x16xf32>, vector<16xf32>
      %x9_0 = tensor.extract %x0[%v287, %k9] : tensor<?x8xf32>
      %xb9_0 = vector.broadcast %x9_0 : f32 to vector<16xf32>
      %n9_0_0 = vector.fma %xb9_0, %b9_0, %acc9_0_0 : vector<16xf32>
      scf.yield %n9_0_0 : vector<16xf32>
    }
    %v290 = vector.transfer_read %e0[%c16], %v2, %v3 : tensor<24xf32>, vector<16xf32>
    %v291 = arith.addf %sum9#0, %v290 : vector<16xf32>
    %v293 = arith.cmpf olt, %v291, %v1 : vector<16xf32>
    %v292 = arith.select %v293, %v1, %v291 : vector<16xi1>, vector<16xf32>
    %v294 = vector.transfer_write %v292, %v277[%v237, %v288], %v3 : vector<16xf32>, tensor<?x?xf32>
    scf.yield %v294 : tensor<?x?xf32>
    } else {
      scf.yield %v277 : tensor<?x?xf32>
    }
    scf.yield %v286 : tensor<?x?xf32>
    }
    scf.forall.in_parallel {
      tensor.parallel_insert_slice %v239 into %v23[%v26, %v35] [%v29, %v40] [1, 1] : tensor<?x?xf32> into tensor<?x24xf32>
    }
    }
    bufferization.materialize_in_destination %v24 in writable %dest : (tensor<?x24xf32>, memref<?x24xf32>) -> ()
    return
  }
  func.func @dense_relu_forgec_main(%in0: memref<?x8xf32>, %out0: memref<?x24xf32>) attributes {llvm.emit_c_interface} {
    %c0 = arith.constant 0 : index
    %sym_batch = memref.dim %in0, %c0 : memref<?x8xf32>
    %v1 = bufferization.to_tensor %in0 restrict : memref<?x8xf32> to tensor<?x8xf32>
    %v2 = arith.constant dense<"0xCDCCCCBDF4FDD4BCA69B443D0AD7A3BDA69BC4BB96438B3D8FC275BD4260653C5839B43D0AD723BD96430B3D1283C0BD0AD7A3BC1B2F5D3D508D97BD000000008FC2753D96438BBDA69BC43B0AD7A33DA69B44BDF4FDD43CCDCCCC3D4260E5BC7F6A3C3D9EEFA7BD6F1203BC022B873DB6F37DBDA69B443CC520B03D31082CBDBC74933C7F6ABC3DBC7413BDE3A51B3DEC51B8BD6F1283BC68916D3D295C8FBD6F12833B77BE9F3DCDCC4CBDA69BC43C39B4C83D8FC2F5BC5839343D3108ACBDA69BC4BCCDCC4C3D77BE9FBD6F1283BB295C8F3D68916DBD6F12833CEC51B83DE3A51BBDBC74133D7F6ABCBDBC7493BC4260653DBC7493BD6F12033BE3A59B3D022B87BD6F12033C9EEFA73D7F6A3CBD4260E53CCDCCCCBDF4FDD4BCA69B443D0AD7A3BDA69BC4BB96438B3D8FC275BD4260653C5839B43D0AD723BD96430B3D1283C03D96430BBD0AD7233D5839B4BD426065BC8FC2753D96438BBDA69BC43B0AD7A33DA69B44BDF4FDD43CCDCCCC3D4260E5BC7F6A3C3D9EEFA7BD6F1203BCF4FD543DE3A59BBD6F1203BBBC74933D426065BDBC74933C7F6ABC3DBC7413BDE3A51B3DEC51B8BD6F1283BC68916D3D295C8FBD6F12833B77BE9F3DCDCC4CBD0AD7233C3108AC3D583934BD8FC2F53C39B4C8BDA69BC4BCCDCC4C3D77BE9FBD6F1283BB295C8F3D68916DBD6F12833CEC51B83DE3A51BBDBC74133D7F6ABCBD508D973D1B2F5DBD0AD7A33C1283C03D96430BBD0AD7233D5839B4BD426065BC00000000000000000000000000000000000000000000000000000000000000006F12033DA69BC4BD5839B4BCF4FD543DE3A59BBD6F1203BBBC74933D426065BD00000000000000000000000000000000000000000000000000000000000000000AD723BC6F12833D6F1283BD0AD7233C3108AC3D583934BD8FC2F53C39B4C8BD0000000000000000000000000000000000000000000000000000000000000000F4FD54BD5839B43CA69BC43D6F1203BD31082C3DC520B0BDA69B44BCB6F37D3D00000000000000000000000000000000000000000000000000000000000000001283C0BD0AD7A3BC1B2F5D3D508D97BD00000000508D973D1B2F5DBD0AD7A33C0000000000000000000000000000000000000000000000000000000000000000022B873DB6F37DBDA69B443CC520B03D31082CBD6F12033DA69BC4BD5839B4BC0000000000000000000000000000000000000000000000000000000000000000A69BC43C39B4C83D8FC2F5BC5839343D3108ACBD0AD723BC6F12833D6F1283BD0000000000000000000000000000000000000000000000000000000000000000BC7493BC4260653DBC7493BD6F12033BE3A59B3DF4FD54BD5839B43CA69BC43D0000000000000000000000000000000000000000000000000000000000000000"> : tensor<2x8x16xf32>
    %v3 = arith.constant dense<"0x9A9999BECDCC4CBECDCCCCBD00000000CDCCCC3DCDCC4C3E9A99993E9A9999BECDCC4CBECDCCCCBD00000000CDCCCC3DCDCC4C3E9A99993E9A9999BECDCC4CBECDCCCCBD00000000CDCCCC3DCDCC4C3E9A99993E9A9999BECDCC4CBECDCCCCBD"> : tensor<24xf32>
    func.call @op2(%sym_batch, %v1, %v2, %v3, %out0) : (index, tensor<?x8xf32>, tensor<2x8x16xf32>, tensor<24xf32>, memref<?x24xf32>) -> ()
    return
  }
  func.func private @forgec_threads() -> index
}
