//! Text made from the configuration: the reference in docs/configuration.md, and a config
//! file's `[plugin]` section.

use super::Config;

/// The text of a config file's `[plugin]` section (empty when none), handed to a plugin's
/// `init` as it was written.
pub fn plugin_section(text: &str) -> String {
    let mut section = String::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            inside = trimmed == "[plugin]";
            continue;
        }
        if inside {
            section.push_str(line);
            section.push('\n');
        }
    }
    section
}

/// The configuration reference (docs/configuration.md), rendered from [`Config::KEYS`].
pub fn reference_markdown() -> String {
    let mut text = String::from(
        "# Configuration\n\n\
         Generated from `shared/src/config/mod.rs` (a test fails when this file drifts; regenerate with\n\
         `UPDATE_DOCS=1 cargo test -p cella-shared`).\n\n\
         Set a key in a TOML file (`key = value`, passed with `--config FILE`), as an environment\n\
         variable `CELLA_<KEY>` (upper case), or with a flag (`--set key=value`, or the named flags\n\
         `--listen`, `--workers`, `--slots`, `--slot-arena`, `--slot-stack`, `--max-connections`).\n\
         Precedence: flag > environment > file > default. Unknown keys are errors in the file and\n\
         in flags; a `CELLA_*` environment variable that is no key (such as the `CELLA_PORT` and\n\
         `CELLA_SERVICE_HOST` Kubernetes injects for a Service named `cella`) is ignored, with one\n\
         warning line on stderr each.\n\
         Sizes take binary units: `B`, `KiB`, `MiB`, `GiB`. No size of the memory plan (stack,\n\
         arena, buffers, panic reserve) may exceed the 64GiB cella maps at most, and every sum\n\
         and product of the plan is checked: a plan that would overflow is refused, naming the\n\
         keys involved.\n\n\
         | key | default | meaning |\n| --- | --- | --- |\n",
    );
    for key in Config::KEYS {
        let doc = key.doc.split_whitespace().collect::<Vec<_>>().join(" ");
        text.push_str(&format!("| `{}` | `{}` | {} |\n", key.name, key.default, doc));
    }
    text
}

#[cfg(test)]
mod reference_tests {
    #[test]
    fn docs_configuration_md_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let expected = super::reference_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/configuration.md is stale: run UPDATE_DOCS=1 cargo test -p cella-shared"
        );
    }
}
