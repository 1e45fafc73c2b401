;; bigmem starts with 128 MiB of memory, over the default limit.
(module
  (memory (export "memory") 2048)
  (func (export "ef_alloc") (param $size i32) (result i32) (i32.const 1024))
  (func (export "ef_process") (param $ptr i32) (param $len i32) (result i64) (i64.const 0)))
