;; globalreach sets global 1, which does not exist: invalid as written, it
;; would reach the host's interrupt global after instrumentation. Compile
;; with wat2wasm --no-check.
(module
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 0))
  (func (export "ef_alloc") (param $size i32) (result i32) (i32.const 1024))
  (func (export "ef_process") (param $ptr i32) (param $len i32) (result i64)
    (global.set 1 (i32.const 0))
    (i64.const 0)))
