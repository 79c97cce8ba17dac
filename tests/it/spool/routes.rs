//! A spooled event is delivered only where `ROUTES` lets it go when it is delivered (issue 21,
//! item 10): neither the spool file nor the SQS queue is trusted to say where an event may go.

use super::*;
use gitlab_deploy_bridge::event::{Defaults, Event, EventDraft, Overrides};
use gitlab_deploy_bridge::model::Status;
use gitlab_deploy_bridge::spool::{Spool, Spooled};

/// A spooled event as a writer of the spool (or of the queue) could make it: `route` names the
/// route, `project` and `environment` where it says it goes.
fn forged(source: &str, route: Option<&str>, project: &str, environment: &str, n: u32) -> Spooled {
    let draft = EventDraft {
        environment: Some(environment.into()),
        sha: Some(SHA_A.into()),
        status: Some(Status::Running),
        ..Default::default()
    };
    let overrides = Overrides { project: Some(project.into()), ..Default::default() };
    let ev = Event::from_draft(source, draft, &overrides, &Defaults::default()).unwrap();
    Spooled::new(&ev, route, &format!("forged-{n}"), OffsetDateTime::now_utc(), "written by hand".into())
}

/// The reason each dead letter in `dir` gives, by the environment of its event.
fn dead_reasons(dir: &Path) -> BTreeMap<String, String> {
    let (ok, list, err) = spool_command(dir, &["list"]);
    assert!(ok, "{err}");
    list.iter()
        .filter(|e| e["state"] == "dead")
        .map(|e| {
            let at = format!(
                "{}:{}",
                e["event"]["project"].as_str().unwrap_or(""),
                e["event"]["environment"].as_str().unwrap_or("")
            );
            (at, e["last_error"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// Issue 21: an entry written into the spool for a project outside every route, a pending
/// event after its route was narrowed, and a `spool replay` after its route was removed all
/// reached GitLab. Each is now a dead letter saying why, and GitLab hears nothing of it; the
/// route restored, the replayed event is delivered.
#[tokio::test]
async fn serve_delivers_a_spooled_event_only_where_routes_let_it_go_now() {
    let gitlab = gitlab_down().await;
    let dir = spool_dir();
    let mut serve = Serve::start(&gitlab, &dir).await;
    assert_eq!(serve.send(Step::ArgoRunning(SHA_A)).await.0, 202);
    serve.kill9().await;
    // Written into the spool by hand: outside the route's projects, on a route that does not
    // exist, and from an unbound hook while those are refused.
    {
        let local = Arc::new(gitlab_deploy_bridge::spool::local::LocalSpool::open(&dir).unwrap());
        let spool = Spool::Local(local, Arc::new(tokio::sync::Notify::new()));
        for (n, item) in [
            forged("argocd", Some("argo"), "evil/app", "argo-prod", 1),
            forged("argocd", Some("nope"), "group/app", "nope-env", 2),
            forged("generic", None, "group/app", "unbound-env", 3),
        ]
        .iter()
        .enumerate()
        {
            assert!(!spool.enqueue(item).await.unwrap().duplicate, "{n}");
        }
    }
    // The argo route narrowed to another environment while the event waited.
    let narrowed = ROUTES.replace(r#""environments": ["argo-prod"]"#, r#""environments": ["argo-canary"]"#);
    let mut serve = Serve::start_with(&gitlab, &dir, &[("ROUTES", narrowed.as_str())]).await;
    gitlab.set_down(None);
    let all_dead = eventually(30, || dead_reasons(&dir).len() == 4).await;
    assert!(all_dead, "{:?}\n{}", dead_reasons(&dir), serve.output());
    let reasons = dead_reasons(&dir);
    for (at, says) in [
        ("group/app:argo-prod", "may not write in environment \"argo-prod\""),
        ("evil/app:argo-prod", "may not write to project \"evil/app\""),
        ("group/app:nope-env", "\"nope\" is no longer in ROUTES"),
        ("group/app:unbound-env", "UNBOUND_HOOKS"),
    ] {
        assert!(reasons[at].contains(says), "{at}: {reasons:?}");
    }
    assert!(gitlab.deployments().is_empty(), "{:?}", gitlab.deployments());
    assert!(!gitlab.requests().iter().any(|r| r.method == "POST"), "nothing was created");

    // Replayed after its route was removed: a dead letter again, GitLab hears nothing.
    serve.kill9().await;
    let without_argo = r#"{"flux": {"source": "flux", "projects": ["group/app"], "environments": ["flux-staging"]}}"#;
    let mut serve = Serve::start_with(&gitlab, &dir, &[("ROUTES", without_argo)]).await;
    let (_, list, _) = spool_command(&dir, &["list"]);
    let genuine =
        list.iter().find(|e| e["event"]["environment"] == "argo-prod" && e["event"]["project"] == "group/app");
    let id = genuine.unwrap()["id"].as_str().unwrap().to_string();
    assert!(spool_command(&dir, &["replay", &id]).0);
    let again = eventually(30, || {
        dead_reasons(&dir).get("group/app:argo-prod").is_some_and(|r| r.contains("\"argo\" is no longer in ROUTES"))
    })
    .await;
    assert!(again, "{:?}\n{}", dead_reasons(&dir), serve.output());
    assert!(gitlab.deployments().is_empty());

    // With the route as it was, the replayed event is delivered.
    serve.kill9().await;
    let serve = Serve::start(&gitlab, &dir).await;
    assert!(spool_command(&dir, &["replay", &id]).0);
    let delivered = eventually(30, || gitlab.deployments_in("argo-prod").len() == 1).await;
    assert!(delivered, "{:?}\n{}", gitlab.deployments(), serve.output());
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 21: a message sent to the spool queue by a holder of `sqs:SendMessage`, for a project
/// outside every route, reached GitLab. It goes to the dead-letter queue with the reason.
#[tokio::test]
async fn lambda_dead_letters_a_queued_event_outside_its_route() {
    let token = format!("glpat-{}", fastrand_token());
    let gitlab = GitLabStub::start(&token).await;
    gitlab.add_commit(SHA_A);
    let sqs = sqs_client();
    let (queue, dlq) = queues(&sqs).await;
    let runtime = RuntimeApi::start(Duration::from_secs(20)).await;
    let function = start_function(&runtime, &gitlab, &queue, &dlq, &[]).await;
    let item = forged("argocd", Some("argo"), "evil/app", "argo-prod", 1);
    sqs.send_message()
        .queue_url(&queue)
        .message_body(serde_json::to_string(&item).unwrap())
        .message_group_id(&item.group)
        .message_deduplication_id(&item.dedup)
        .send()
        .await
        .unwrap();
    let (received, failed) = poll_once(&sqs, &runtime, &queue).await;
    assert_eq!((received, failed), (1, 0), "{}", function.output.lock().unwrap());
    let dead =
        sqs.receive_message().queue_url(&dlq).message_attribute_names("All").wait_time_seconds(1).send().await.unwrap();
    let dead = dead.messages();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0].message_attributes().unwrap().get("reason").unwrap().string_value().unwrap();
    assert!(reason.contains("may not write to project \"evil/app\""), "{reason}");
    assert!(gitlab.deployments().is_empty());
    assert!(!gitlab.requests().iter().any(|r| r.method == "POST"), "nothing was created");
}
