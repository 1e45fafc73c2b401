;; echo returns its input unchanged: ef_process(ptr, len) -> ptr<<32 | len.
(module
  (memory (export "memory") 1)
  (func (export "ef_abi_version") (result i32) (i32.const 1))
  (func (export "ef_alloc") (param $size i32) (result i32) (i32.const 1024))
  (func (export "ef_process") (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))
