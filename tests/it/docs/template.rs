//! template.yaml is lint-clean with the real SAM transform (cfn-lint 1.53.3), and the lint
//! really catches faults: deliberately broken copies must fail.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cfn_lint() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/cfn-lint");
    if venv.exists() { venv } else { PathBuf::from("cfn-lint") }
}

fn lint(template: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("bridge-lint-{}", crate::support::fastrand_token()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("template.yaml");
    std::fs::write(&file, template).unwrap();
    let out =
        Command::new(cfn_lint()).arg(&file).output().expect("cfn-lint runs (bash scripts/test installs it into .venv)");
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn template() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("template.yaml")).unwrap()
}

#[test]
fn lint_is_the_version_that_runs_the_sam_transform() {
    let out = Command::new(cfn_lint()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("1.53.3"), "pin cfn-lint==1.53.3");
}

#[test]
fn template_has_no_errors_and_no_warnings() {
    let (ok, out) = lint(&template());
    assert!(ok && out.trim().is_empty(), "cfn-lint findings:\n{out}");
}

#[test]
fn broken_templates_fail_the_lint() {
    let t = template();
    let mutations = [
        ("Runtime: provided.al2023", "Runtime: provided.al2099"),
        ("Architectures: [arm64]", "Architectures: [arm65]"),
        ("AuthType: NONE", "AuthType: OPEN"),
        ("!GetAtt BridgeFunctionUrl.FunctionUrl", "!GetAtt BridgeFunctionUrlX.FunctionUrl"),
        ("Timeout: 20", "Timeoutt: 20"),
        // The spool (issue 11): a FIFO flag that is no boolean, an event source mapping on a
        // queue that does not exist, a response type SQS does not know, and a visibility
        // timeout shorter than the function's (a batch in flight would be handed out twice).
        ("FifoQueue: true", "FifoQueue: maybe"),
        ("Queue: !GetAtt SpoolQueue.Arn", "Queue: !GetAtt SpoolQueuee.Arn"),
        ("[ReportBatchItemFailures]", "[ReportBatchItemFailure]"),
        ("VisibilityTimeout: 120", "VisibilityTimeout: 10"),
    ];
    for (from, to) in mutations {
        assert!(t.contains(from), "template no longer contains {from:?}");
        let (ok, out) = lint(&t.replacen(from, to, 1));
        assert!(!ok, "cfn-lint accepted a template with {to:?}:\n{out}");
    }
}

/// The text of one resource (or parameter, or output): its `  Name:` line and the lines under it,
/// up to the next line indented by less than four spaces.
fn section(t: &str, name: &str) -> String {
    let head = format!("  {name}:");
    let mut lines = t.lines().skip_while(|l| *l != head);
    let first = lines.next().unwrap_or_else(|| panic!("template has no {name}"));
    let body = lines.take_while(|l| l.is_empty() || l.starts_with("    "));
    std::iter::once(first).chain(body).collect::<Vec<_>>().join("\n")
}

#[test]
fn spool_resources_are_wired() {
    let t = template();

    // Both queues are FIFO (a FIFO queue's dead-letter queue must be FIFO too) and encrypted.
    for queue in ["SpoolQueue", "SpoolDeadLetterQueue"] {
        let q = section(&t, queue);
        assert!(q.contains("Type: AWS::SQS::Queue"), "{queue}:\n{q}");
        assert!(q.contains("FifoQueue: true"), "{queue} is not FIFO:\n{q}");
        assert!(q.contains(".fifo"), "{queue}'s name lacks .fifo:\n{q}");
        assert!(q.contains("SqsManagedSseEnabled: true"), "{queue} is not encrypted:\n{q}");
    }
    let spool = section(&t, "SpoolQueue");
    assert!(spool.contains("ContentBasedDeduplication: false"), "the function sets MessageDeduplicationId:\n{spool}");
    assert!(spool.contains("deadLetterTargetArn: !GetAtt SpoolDeadLetterQueue.Arn"), "{spool}");

    // The function consumes the spool and answers batches with batchItemFailures.
    let function = section(&t, "BridgeFunction");
    assert!(function.contains("Type: SQS"), "no SQS event source mapping:\n{function}");
    assert!(function.contains("Queue: !GetAtt SpoolQueue.Arn"), "{function}");
    assert!(function.contains("FunctionResponseTypes: [ReportBatchItemFailures]"), "{function}");
    for var in [
        "SPOOL_QUEUE_URL: !Ref SpoolQueue",
        "SPOOL_DLQ_URL: !Ref SpoolDeadLetterQueue",
        "SPOOL_MODE: !Ref SpoolMode",
        "SPOOL_MAX_AGE_HOURS: !Ref SpoolMaxAgeHours",
    ] {
        assert!(function.contains(var), "BridgeFunction does not set {var}:\n{function}");
    }

    // Least privilege: the five actions on the spool, SendMessage alone on the DLQ, no wildcard.
    let role = section(&t, "BridgeRole");
    for action in [
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "Resource: !GetAtt SpoolQueue.Arn",
        "Action: sqs:SendMessage\n                Resource: !GetAtt SpoolDeadLetterQueue.Arn",
    ] {
        assert!(role.contains(action), "BridgeRole lacks {action:?}:\n{role}");
    }
    assert_eq!(role.matches("sqs:").count(), 6, "BridgeRole grants other SQS actions:\n{role}");
    for wildcard in ["sqs:*", "Action: '*'", "Action: \"*\"", "Resource: '*'", "Resource: \"*\"", "Resource: *"] {
        assert!(!role.contains(wildcard), "BridgeRole has {wildcard:?}:\n{role}");
    }

    // The operator's `spool` command finds both queues in the outputs.
    assert!(section(&t, "SpoolQueueUrl").contains("Value: !Ref SpoolQueue"));
    assert!(section(&t, "SpoolDeadLetterQueueUrl").contains("Value: !Ref SpoolDeadLetterQueue"));
}

#[test]
fn the_readme_commands_use_samconfigs_stack_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let samconfig = std::fs::read_to_string(root.join("samconfig.toml")).unwrap();
    let name = samconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("stack_name = \""))
        .and_then(|r| r.strip_suffix('"'))
        .expect("samconfig.toml names the stack");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let used: Vec<&str> = readme
        .split("--stack-name ")
        .skip(1)
        .filter_map(|r| r.split_whitespace().next())
        .map(|n| n.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .collect();
    assert!(!used.is_empty());
    assert!(used.iter().all(|u| *u == name), "README uses stack names {used:?}; samconfig.toml says {name:?}");
}
