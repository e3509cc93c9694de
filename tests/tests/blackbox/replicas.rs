//! Three replicas of one deployment on one PostgreSQL database: racing get-or-create calls
//! spread across them make one sandbox per chat, the survivors serve on when one is killed, and
//! the maintenance lease lets one replica sweep at a time. Skips (printing so) without
//! DATABASE_URL or Docker, fails without them under SANDKEEPER_REQUIRE_POSTGRES=1 /
//! SANDKEEPER_REQUIRE_DOCKER=1.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use sandkeeper_tests::{
    Server, StatusCode, TempDatabase, TestEnv, container_label, eventually, metric, or_skip,
};

const REPLICAS: usize = 3;
const CHATS: usize = 10;
const PUTS: usize = 120;
/// `--maintenance-interval` of every replica.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How long the replicas sweep before their counters are read.
const SWEEP_WINDOW: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_make_one_sandbox_per_chat_survive_a_kill_and_sweep_one_at_a_time() {
    let database = or_skip!(TempDatabase::for_docker_test().await);
    let env = TestEnv::new();
    let interval = format!("{}ms", SWEEP_INTERVAL.as_millis());
    let args = ["--database-url", database.url(), "--maintenance-interval", interval.as_str()];
    let window_start = Instant::now();
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(env.serve(&args).await);
    }
    for replica in &replicas {
        let (status, body) = replica.get("/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // 120 racing PUTs over 10 chats; call k goes to chat k % 10 and replica k % 3, so every
    // chat is asked of all three replicas at once.
    let chats: Vec<String> = (0..CHATS).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..PUTS)
        .map(|k| {
            let url =
                replicas[k % REPLICAS].url(&format!("/v1/chats/{}/sandbox", chats[k % CHATS]));
            let client = client.clone();
            tokio::spawn(async move {
                let response = client.put(&url).send().await.expect("the replica answers");
                let status = response.status();
                let body: serde_json::Value =
                    serde_json::from_str(&response.text().await.unwrap()).unwrap();
                (status, body)
            })
        })
        .collect();
    let mut by_chat: BTreeMap<String, Vec<(StatusCode, serde_json::Value)>> = BTreeMap::new();
    for (k, call) in calls.into_iter().enumerate() {
        let (status, body) = call.await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "PUT {k} (chat {}, replica {}) answered {status}: {body}",
            chats[k % CHATS],
            k % REPLICAS
        );
        by_chat.entry(chats[k % CHATS].clone()).or_default().push((status, body));
    }
    let mut session_of = BTreeMap::new();
    for (chat, answers) in &by_chat {
        let created = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
        let sessions: HashSet<&str> =
            answers.iter().map(|(_, body)| body["session_id"].as_str().unwrap()).collect();
        assert_eq!(created, 1, "chat {chat}: exactly one of its PUTs creates: {answers:?}");
        assert_eq!(sessions.len(), 1, "chat {chat}: every reply names one session: {sessions:?}");
        session_of.insert(chat.clone(), sessions.into_iter().next().unwrap().to_owned());
    }
    assert_one_session_and_container_per_chat(&env, &replicas, &session_of).await;

    // The lease: sum the sweeps every replica completed over the window. One sweeper at a time,
    // and none sooner than min_interval (three quarters of --maintenance-interval) after the
    // last completed one, allow at most 1 + window / min_interval passes in all.
    let elapsed = window_start.elapsed();
    if elapsed < SWEEP_WINDOW {
        tokio::time::sleep(SWEEP_WINDOW - elapsed).await;
    }
    let mut completed = 0.0;
    let mut skipped = 0.0;
    let mut per_replica = Vec::new();
    for replica in &replicas {
        let text = replica.metrics().await;
        let done = metric(&text, "sandbox_maintenance_runs_total{result=\"completed\"}");
        let passed = metric(&text, "sandbox_maintenance_runs_total{result=\"skipped\"}");
        completed += done.unwrap_or(0.0);
        skipped += passed.unwrap_or(0.0);
        per_replica.push((done.unwrap_or(0.0), passed.unwrap_or(0.0)));
    }
    let window = window_start.elapsed();
    let min_interval = SWEEP_INTERVAL.mul_f64(0.75);
    let most = 1.0 + (window.as_secs_f64() / min_interval.as_secs_f64()).floor();
    println!(
        "{REPLICAS} replicas over {:.2} s: completed/skipped sweeps per replica {per_replica:?}; \
         {completed} completed in all, at most {most} possible for one sweeper",
        window.as_secs_f64()
    );
    assert!(completed >= 1.0, "no replica completed a sweep: {per_replica:?}");
    assert!(
        completed <= most,
        "{completed} sweeps completed in {:.2} s across the replicas ({per_replica:?}), more than \
         the {most} one sweeper can complete with a minimum interval of {min_interval:?}",
        window.as_secs_f64()
    );
    assert!(skipped >= 1.0, "no sweep was skipped for the lease: {per_replica:?}");

    // One replica dies; the others serve on: reuse, delete, create.
    let mut killed = replicas.remove(0);
    killed.kill();
    for (i, chat) in chats.iter().enumerate() {
        let survivor = &replicas[i % replicas.len()];
        let (status, body) = survivor.put_sandbox(chat).await;
        assert_eq!(status, StatusCode::OK, "chat {chat} after the kill: {body}");
        assert_eq!(body["session_id"], session_of[chat].as_str(), "chat {chat} after the kill");
    }
    let (status, body) = replicas[0].delete_sandbox(&chats[0]).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = replicas[1].get(&format!("/v1/chats/{}/sandbox", chats[0])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the other survivor sees the delete");
    assert_eq!(env.containers(true).len(), CHATS - 1, "the deleted sandbox's container is gone");
    let (status, body) = replicas[1].put_sandbox(&chats[0]).await;
    assert_eq!((status, body["result"].as_str()), (StatusCode::CREATED, Some("created")), "{body}");
    session_of.insert(chats[0].clone(), body["session_id"].as_str().unwrap().to_owned());
    assert_one_session_and_container_per_chat(&env, &replicas, &session_of).await;

    // A lease the dead replica held runs out; the survivors go on sweeping.
    let before = completed_sweeps(&replicas).await;
    let swept_again = eventually(Duration::from_secs(20), || async {
        (completed_sweeps(&replicas).await > before).then_some(())
    })
    .await;
    assert!(swept_again.is_some(), "the survivors stopped sweeping after the kill");
}

async fn completed_sweeps(replicas: &[Server]) -> f64 {
    let mut total = 0.0;
    for replica in replicas {
        let text = replica.metrics().await;
        total +=
            metric(&text, "sandbox_maintenance_runs_total{result=\"completed\"}").unwrap_or(0.0);
    }
    total
}

/// Every replica lists exactly one running session per chat, the ones in `session_of`, and the
/// engine holds exactly one container per chat, labelled with that session.
async fn assert_one_session_and_container_per_chat(
    env: &TestEnv,
    replicas: &[Server],
    session_of: &BTreeMap<String, String>,
) {
    for (i, replica) in replicas.iter().enumerate() {
        let (status, body) = replica.get("/v1/sandboxes?status=running").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let listed: BTreeMap<String, String> = body["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (s["chat_id"].as_str().unwrap().into(), s["session_id"].as_str().unwrap().into())
            })
            .collect();
        let count = body["sandboxes"].as_array().unwrap().len();
        assert_eq!(
            count,
            session_of.len(),
            "replica {i} lists one running session per chat: {body}"
        );
        assert_eq!(&listed, session_of, "replica {i} lists the sessions the PUTs named");
    }
    let containers = env.containers(true);
    assert_eq!(containers.len(), session_of.len(), "one container per chat: {containers:?}");
    let mut labelled = BTreeMap::new();
    for container in &containers {
        let chat = container_label(container, "io.sandkeeper.chat").unwrap();
        let session = container_label(container, "io.sandkeeper.session").unwrap();
        assert!(labelled.insert(chat.clone(), session).is_none(), "chat {chat} has two containers");
    }
    assert_eq!(&labelled, session_of, "each container carries its chat's session");
}
