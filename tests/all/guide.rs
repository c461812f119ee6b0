//! The vendor's guide, followed as a new vendor would: every block of
//! `docs/vendor-guide.md` marked `sh guide` is run, in order, on a clean
//! directory (`cd` moves on, `patchbay` is this build's binary, `cargo` the
//! toolchain's), and every `toml guide FILE` block is written to FILE, with
//! the public key `plugin keygen` printed put where the guide says. Every
//! command must succeed; at the end the package is installed as signed by
//! the guide's publisher, with no unsigned package allowed.

use crate::spawn::{patchbay, run, text};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the guide's blocks come from.
fn guide() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/vendor-guide.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One step of the guide.
enum Step {
    Command(String),
    File { name: String, text: String },
}

fn steps(guide: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let words: Vec<&str> = info.split_whitespace().collect();
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        match words.as_slice() {
            ["sh", "guide"] => steps.extend(
                body.iter()
                    .map(|l| l.trim())
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| Step::Command(l.to_owned())),
            ),
            ["toml", "guide", name] => steps.push(Step::File {
                name: (*name).to_owned(),
                text: body.join("\n") + "\n",
            }),
            _ => {}
        }
    }
    steps
}

/// `line` split into words; double quotes group words.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

#[tokio::test]
async fn the_vendor_guide_works_as_written() {
    let guide = guide();
    let steps = steps(&guide);
    assert!(
        steps.len() >= 10,
        "the guide's runnable blocks were not found"
    );
    let work = tempfile::tempdir().expect("tempdir");
    let target = crate::scaffold::vendor_target();
    let mut cwd: PathBuf = work.path().to_owned();
    let mut public_key = None;
    let mut ran = Vec::new();
    for step in steps {
        match step {
            Step::File { name, text } => {
                let key = public_key
                    .as_deref()
                    .expect("keygen runs before the policy");
                let text = text.replace("ed25519:THE-KEY-KEYGEN-PRINTED", key);
                assert!(
                    text.contains(key),
                    "the guide's policy has no key placeholder"
                );
                std::fs::write(cwd.join(name), text).expect("write");
            }
            Step::Command(line) => {
                let words = words(&line);
                let (program, args) = words.split_first().expect("a command");
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                if program == "cd" {
                    cwd = cwd.join(args[0]).canonicalize().expect("cd");
                    continue;
                }
                let mut cmd = match program.as_str() {
                    "patchbay" => {
                        let mut cmd = patchbay(&args);
                        // Only what the guide's operator trusts is installed.
                        cmd.env_remove("PATCHBAY_ALLOW_UNSIGNED");
                        cmd
                    }
                    "cargo" => {
                        let mut cmd = Command::new(env!("CARGO"));
                        cmd.args(&args);
                        cmd
                    }
                    other => panic!("the guide runs {other:?}, which this test does not know"),
                };
                cmd.current_dir(&cwd).env("CARGO_TARGET_DIR", &target);
                let out = run(cmd).await;
                assert!(
                    out.status.success(),
                    "`{line}` failed (after {ran:?}): {} {}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
                if line.starts_with("patchbay plugin keygen") {
                    public_key = Some(text(&out.stdout).trim().to_owned());
                }
                if line.starts_with("patchbay plugin inspect") {
                    let shown: serde_json::Value =
                        serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
                    assert_eq!(shown["package"]["publisher"]["name"], "Acme Inc", "{shown}");
                    assert_eq!(
                        shown["package"]["publisher"]["key"].as_str(),
                        public_key.as_deref()
                    );
                }
                ran.push(line);
            }
        }
    }
    for needed in [
        "patchbay plugin new",
        "patchbay plugin build",
        "patchbay plugin test",
        "patchbay plugin sign",
        "patchbay plugin install",
        "cargo doc",
    ] {
        assert!(
            ran.iter().any(|l| l.starts_with(needed)),
            "the guide no longer runs {needed}: {ran:?}"
        );
    }
    // The SDK reference the guide points to was generated.
    let index = target.join("doc/patchbay_sdk/index.html");
    let page = std::fs::read_to_string(&index).expect("the SDK reference");
    assert!(page.contains("export_connector"), "{}", index.display());
    for module in ["http", "kv", "config", "log", "cx", "webhooks"] {
        assert!(
            target
                .join(format!("doc/patchbay_sdk/{module}/index.html"))
                .exists(),
            "no reference for {module}"
        );
    }
}
