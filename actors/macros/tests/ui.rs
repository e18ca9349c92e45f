//! Misuse of `#[micro::service]` fails to compile with a message that says what is wrong; the
//! messages are the `.stderr` snapshots next to each file (`TRYBUILD=overwrite` rewrites them).

#[test]
fn misuse_gives_clear_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass_every_shape.rs");
    cases.compile_fail("tests/ui/not_async.rs");
    cases.compile_fail("tests/ui/no_self.rs");
    cases.compile_fail("tests/ui/wrong_argument_count.rs");
    cases.compile_fail("tests/ui/generic_method.rs");
    cases.compile_fail("tests/ui/missing_schema.rs");
    cases.compile_fail("tests/ui/reserved_name.rs");
}
