//! drover's issue calls (drift issues) against the GitHub API emulator: every page of
//! open issues with a label, pull requests skipped, conditional re-listing, create, edit
//! and close; every request and response checked against GitHub's OpenAPI description.

use std::time::Duration;

use crate::support::github_emulator::{Config, GithubEmulator};
use drover::credentials::Secret;
use drover::github::{Auth, CloseReason, GithubClient, RetryPolicy};

const REPO: &str = "acme/fleet-ops";

async fn setup() -> (GithubEmulator, GithubClient) {
    let emu = GithubEmulator::start(Config {
        pat: Some("issues-token".into()),
        ..Config::default()
    })
    .await;
    let policy = RetryPolicy {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        reserve: 0,
        ..RetryPolicy::default()
    };
    let client =
        GithubClient::new(&emu.url, &Auth::Token(Secret::new("issues-token")), policy).unwrap();
    (emu, client)
}

#[tokio::test]
async fn open_issues_lists_every_page_skips_pull_requests_and_polls_for_free() {
    let (emu, client) = setup().await;
    for i in 0..130 {
        emu.add_issue(REPO, &format!("issue {i}"), "b", &["drover-drift"], false);
    }
    emu.add_issue(REPO, "unlabelled", "b", &["bug"], false);
    emu.add_issue(REPO, "a pull request", "b", &["drover-drift"], true);
    let closed = client
        .create_issue(REPO, "to close", "b", &["drover-drift".into()])
        .await
        .unwrap();
    client
        .close_issue(REPO, closed.number, CloseReason::Completed)
        .await
        .unwrap();

    let open = client.open_issues(REPO, "drover-drift").await.unwrap();
    assert_eq!(open.len(), 130);
    assert!(
        open.windows(2).all(|w| w[0].number < w[1].number),
        "oldest first"
    );
    assert!(
        open.iter()
            .all(|i| i.state == "open" && i.title.starts_with("issue "))
    );
    let lists = |emu: &GithubEmulator| {
        emu.seen()
            .iter()
            .filter(|r| r.method == "GET" && r.path == format!("/repos/{REPO}/issues"))
            .count()
    };
    assert_eq!(lists(&emu), 2, "two pages of 100");

    let budget = emu.remaining();
    let again = client.open_issues(REPO, "drover-drift").await.unwrap();
    assert_eq!(again, open);
    assert_eq!(emu.remaining(), budget, "unchanged pages are 304s, free");
    assert!(
        emu.seen().iter().rev().take(2).all(|r| r.status == 304),
        "{:?}",
        emu.seen()
    );
    emu.assert_conformant();
}

#[tokio::test]
async fn issues_are_created_edited_and_closed_with_a_reason() {
    let (emu, client) = setup().await;
    let labels = vec!["drover-drift".to_string(), "needs triage".to_string()];
    let created = client
        .create_issue(REPO, "drover: drift on site lab", "first", &labels)
        .await
        .unwrap();
    assert_eq!(created.number, 1);
    assert_eq!(created.body.as_deref(), Some("first"));
    assert!(created.html_url.ends_with("/issues/1"));
    // A label with a space is encoded in the query and still matches.
    let found = client.open_issues(REPO, "needs triage").await.unwrap();
    assert_eq!(found.len(), 1);

    let edited = client.update_issue_body(REPO, 1, "second").await.unwrap();
    assert_eq!(edited.body.as_deref(), Some("second"));
    let dup = client
        .create_issue(REPO, "drover: drift on site lab", "dup", &labels)
        .await
        .unwrap();
    client
        .close_issue(REPO, dup.number, CloseReason::Duplicate)
        .await
        .unwrap();
    let done = client
        .close_issue(REPO, 1, CloseReason::Completed)
        .await
        .unwrap();
    assert_eq!(done.state, "closed");
    let issues = emu.issues(REPO);
    assert_eq!(issues[0].state_reason.as_deref(), Some("completed"));
    assert_eq!(issues[1].state_reason.as_deref(), Some("duplicate"));
    assert_eq!(issues[0].labels, labels);
    assert!(
        client
            .open_issues(REPO, "drover-drift")
            .await
            .unwrap()
            .is_empty()
    );
    let err = client.update_issue_body(REPO, 99, "x").await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    emu.assert_conformant();
}
