//! `rules check` on broken rule files: each file in tests/broken/ says on its first line
//! where its mistake is and what the message must say (`# error: LINE:COL: text`).

use std::path::{Path, PathBuf};

use pvbus_rules::simulate::check;

#[test]
fn check_points_at_the_exact_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let header = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .expect("first line `# error: L:C: text`");
        let mut parts = header.splitn(3, ':');
        let line: usize = parts.next().unwrap().parse().unwrap();
        let column: usize = parts.next().unwrap().parse().unwrap();
        let wanted = parts.next().unwrap().trim();
        match check(f) {
            Ok(_) => problems.push(format!("{}: accepted, expected an error", f.display())),
            Err(errors) => {
                let hit = errors
                    .0
                    .iter()
                    .any(|e| e.line == line && e.column == column && e.message.contains(wanted));
                if !hit {
                    problems.push(format!(
                        "{}: expected {line}:{column}: {wanted}\n  got: {errors}",
                        f.display()
                    ));
                }
                for e in &errors.0 {
                    // The display names the file and shows the line with a caret.
                    let shown = e.to_string();
                    assert!(
                        shown.starts_with(&format!("{}:{}:{}: ", f.display(), e.line, e.column)),
                        "{shown}"
                    );
                    assert!(shown.contains('^'), "{shown}");
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_example_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    for f in std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
    {
        if f.extension().is_some_and(|x| x == "toml")
            && let Err(e) = check(&f)
        {
            panic!("{e}");
        }
    }
}

#[test]
fn included_files_are_read_and_their_errors_located() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/include");
    let rules = check(&dir.join("pvbus.toml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = rules.relays.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["pump", "heater"]);
    let errors = check(&dir.join("broken.toml")).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    let e = &errors.0[0];
    assert!(e.file.ends_with("broken.d/heater.toml"), "{e}");
    assert_eq!((e.line, e.column), (3, 8), "{e}");
    assert!(
        e.message.contains("close names: bmv.state_of_charge"),
        "{e}"
    );
}
