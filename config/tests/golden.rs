//! Golden cases: every file under `cases/invalid/` must fail with exactly the rendered text in
//! its `.expected` file, and every file under `cases/valid/` must load.
//!
//! `UPDATE_GOLDEN=1 cargo test -p strait-config --test golden` rewrites the `.expected` files;
//! review the diff before committing it.

use std::fs;
use std::path::{Path, PathBuf};

use strait_config::{ConfigError, load};

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases")
        .join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("UTF-8 file name")
}

#[test]
fn invalid_cases_render_as_expected() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let cases = cases("invalid");
    assert!(
        cases.len() >= 40,
        "only {} invalid cases found",
        cases.len()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let rendered = match load(case) {
            Ok(_) => {
                failures.push(format!("{}: loaded, but must fail", file_name(case)));
                continue;
            }
            Err(err @ ConfigError::Io { .. }) => panic!("{}: {err}", case.display()),
            Err(err) => format!("{}\n", err.render(file_name(case))),
        };
        let expected_path = case.with_extension("expected");
        if update {
            fs::write(&expected_path, &rendered).expect("write .expected");
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == rendered => {}
            Ok(expected) => failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{rendered}",
                file_name(case)
            )),
            Err(_) => failures.push(format!(
                "{}: missing {} (run with UPDATE_GOLDEN=1 to create it); actual:\n{rendered}",
                file_name(case),
                file_name(&expected_path)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expected_file_has_a_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/invalid");
    let cases = cases("invalid");
    let orphans: Vec<String> = fs::read_dir(&dir)
        .expect("read cases/invalid")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "expected"))
        .filter(|expected| {
            !cases
                .iter()
                .any(|case| case.with_extension("expected") == *expected)
        })
        .map(|path| file_name(&path).to_owned())
        .collect();
    assert!(
        orphans.is_empty(),
        ".expected files without a case: {orphans:?}"
    );
}

#[test]
fn valid_cases_load() {
    let cases = cases("valid");
    assert!(cases.len() >= 3, "only {} valid cases found", cases.len());
    for case in &cases {
        if let Err(err) = load(case) {
            panic!("{}", err.render(file_name(case)));
        }
    }
}
