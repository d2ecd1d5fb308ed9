//! Compile-fail tests: each file under `ui/` makes one mistake (the last makes
//! several), and its `.stderr` holds the errors the derive must report.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
