//! The command line of both binaries, as an operator meets it: `--help` lists every flag with
//! its default and exits 0; a bad flag or a bad config file is one line on stderr and exit 78
//! (EX_CONFIG, which the systemd unit does not restart on).

use std::io::Write;
use std::process::{Command, Output};

const EX_CONFIG: i32 = 78;

fn binaries() -> [&'static str; 2] {
    [
        env!("CARGO_BIN_EXE_mqtt-broker"),
        env!("CARGO_BIN_EXE_mqtt-broker-sync"),
    ]
}

/// Runs `binary ARGS` in a directory of its own, so a default `./data` never lands in the
/// checkout.
fn run(binary: &str, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    Command::new(binary)
        .args(args)
        .current_dir(cwd.path())
        .output()
        .unwrap()
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_lists_the_flags_with_their_defaults_and_exits_0() {
    for binary in binaries() {
        let output = run(binary, &["--help"]);
        let help = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{binary} --help: {help}");
        for expected in [
            "--listen",
            "--max-connections",
            "10000",
            "--read-buffer-size",
            "8192",
            "--initial-pool-size",
            "--session-expiry",
            "3600",
            "--runtime",
        ] {
            assert!(
                help.contains(expected),
                "{binary} --help lacks {expected:?}: {help}"
            );
        }
    }
}

#[test]
fn a_bad_flag_is_one_line_naming_it_and_exit_78() {
    let cases: [(&[&str], &str); 2] = [
        (&["--no-such-flag"], "--no-such-flag"),
        (&["--max-connections", "many"], "max-connections"),
    ];
    for binary in binaries() {
        for (args, named) in cases {
            let output = run(binary, args);
            let lines = stderr_lines(&output);
            assert_eq!(
                output.status.code(),
                Some(EX_CONFIG),
                "{binary} {args:?}: {lines:?}"
            );
            assert!(
                lines.len() == 1 && lines[0].contains(named),
                "{binary} {args:?}: expected one line naming {named}, got {lines:?}"
            );
        }
    }
}

#[test]
fn an_unknown_config_key_is_one_line_with_a_suggestion_and_exit_78() {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    writeln!(config, "max-conections = 5").unwrap();
    let path = config.path().to_str().unwrap();
    for binary in binaries() {
        let output = run(binary, &["--config", path]);
        let lines = stderr_lines(&output);
        assert_eq!(output.status.code(), Some(EX_CONFIG), "{binary}: {lines:?}");
        assert!(
            lines.len() == 1 && lines[0].contains("max-connections"),
            "{binary}: expected one line suggesting max-connections, got {lines:?}"
        );
    }
}

/// README's quick start is `cargo run --release`; the package has three binaries, so without
/// `default-run` cargo refuses to pick one and the first command a new user types fails.
#[test]
fn cargo_run_runs_the_sharded_broker() {
    let manifest = include_str!("../Cargo.toml");
    assert!(
        manifest
            .lines()
            .any(|line| line.trim() == r#"default-run = "mqtt-broker""#),
        "Cargo.toml must name mqtt-broker as the default binary"
    );
}
