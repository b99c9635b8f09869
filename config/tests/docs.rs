//! Every ```yaml and ```json block in docs/config.md is a complete, valid config; blocks
//! marked ```yaml fragment are parts of one and are skipped.

use std::path::Path;

use strait_config::{Format, parse};

#[test]
fn docs_examples_are_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    let docs = std::fs::read_to_string(&path).expect("read docs/config.md");

    let mut blocks = Vec::new();
    let mut current: Option<(usize, Format, String)> = None;
    for (index, line) in docs.lines().enumerate() {
        match &mut current {
            None => match line.trim_end() {
                "```yaml" => current = Some((index + 1, Format::Yaml, String::new())),
                "```json" => current = Some((index + 1, Format::Json, String::new())),
                _ => {}
            },
            Some(_) if line.starts_with("```") => blocks.extend(current.take()),
            Some((_, _, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(current.is_none(), "unclosed code block in docs/config.md");
    assert!(blocks.len() >= 3, "only {} examples found", blocks.len());

    let failures: Vec<String> = blocks
        .iter()
        .filter_map(|(line, format, text)| {
            let err = parse(text, *format).err()?;
            Some(err.render(&format!("docs/config.md block at line {line}")))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
