//! Traces over OTLP: with `--otlp-endpoint`, the spans of a request reach a collector (here a
//! small receiver that decodes what the real exporter posts to `/v1/traces`), as part of the
//! caller's trace when the request carries a W3C `traceparent` header.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use sandkeeper_tests::{StatusCode, TestEnv, chat, eventually, metric, or_skip};

const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

/// Every export request received, decoded.
type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// A collector on a free loopback port: its base URL and what it receives.
async fn collector() -> (String, Received) {
    let received = Received::default();
    let app =
        axum::Router::new().route("/v1/traces", post(receive)).with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("the bound address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), received)
}

async fn receive(State(received): State<Received>, body: Bytes) -> StatusCode {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            received.lock().unwrap().push(request);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

fn string(value: Option<&AnyValue>) -> Option<&str> {
    match value?.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text),
        _ => None,
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| string(kv.value.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requests_spans_reach_the_collector_in_the_callers_trace() {
    let env = or_skip!(TestEnv::for_docker());
    let (endpoint, received) = collector().await;
    let mut server = env.serve(&["--otlp-endpoint", &endpoint]).await;

    let chat_id = chat();
    let request = server
        .request(reqwest::Method::PUT, &format!("/v1/chats/{chat_id}/sandbox"))
        .header("traceparent", format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"));
    let (status, body) = server.send(request).await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = server.delete_sandbox(&chat_id).await;
    assert!(status.is_success(), "{status} {body}");
    // Nothing was dropped, and the counter is there to be watched.
    let metrics = server.metrics().await;
    let dropped = metric(&metrics, "otlp_spans_dropped_total{reason=\"queue_full\"}");
    assert_eq!(dropped, Some(0.0), "{metrics}");
    // A graceful stop flushes the spans still queued before the process exits.
    let exit = server.terminate();
    assert!(exit.success(), "{exit:?}\n{}", server.logs());

    let requests = received.lock().unwrap().clone();
    assert!(!requests.is_empty(), "no spans reached the collector:\n{}", server.logs());
    let mut spans: Vec<Span> = Vec::new();
    for resource_spans in requests.iter().flat_map(|request| &request.resource_spans) {
        let resource = resource_spans.resource.as_ref().expect("a resource");
        assert_eq!(attribute(&resource.attributes, "service.name"), Some("sandkeeper"));
        spans.extend(resource_spans.scope_spans.iter().flat_map(|scope| scope.spans.clone()));
    }
    let in_callers_trace: Vec<&Span> =
        spans.iter().filter(|span| hex(&span.trace_id) == CALLER_TRACE_ID).collect();
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();

    let root = in_callers_trace
        .iter()
        .find(|span| span.name == "http.request" && hex(&span.parent_span_id) == CALLER_SPAN_ID)
        .unwrap_or_else(|| panic!("no request span is the caller's child: {names:?}"));
    assert_eq!(attribute(&root.attributes, "http.request.method"), Some("PUT"));
    assert_eq!(attribute(&root.attributes, "http.route"), Some("/v1/chats/{chat_id}/sandbox"));

    let create =
        in_callers_trace.iter().find(|span| span.name == "usecase.create_sandbox").unwrap_or_else(
            || panic!("no usecase.create_sandbox span in the caller's trace: {names:?}"),
        );
    assert_eq!(attribute(&create.attributes, "chat.id"), Some(chat_id.as_str()));
    // Beneath the request span: its parents lead there, within the caller's trace.
    let mut parent = create.parent_span_id.clone();
    loop {
        assert!(!parent.is_empty(), "usecase.create_sandbox is not beneath the request span");
        if parent == root.span_id {
            break;
        }
        let span = in_callers_trace
            .iter()
            .find(|span| span.span_id == parent)
            .unwrap_or_else(|| panic!("a parent of usecase.create_sandbox is missing: {names:?}"));
        parent = span.parent_span_id.clone();
    }

    // The delete carried no traceparent: a trace of its own.
    let delete = spans
        .iter()
        .find(|span| span.name == "usecase.delete_sandbox")
        .unwrap_or_else(|| panic!("no usecase.delete_sandbox span: {names:?}"));
    assert_ne!(hex(&delete.trace_id), CALLER_TRACE_ID);
}

#[test]
fn a_bad_collector_url_exits_2_naming_the_flag() {
    let env = TestEnv::new();
    for (args, vars) in [
        (vec!["--otlp-endpoint", "https://collector:4318"], vec![]),
        (vec![], vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]),
    ] {
        let output = env
            .command("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .envs(vars.iter().copied())
            .output()
            .expect("sandkeeper runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {vars:?}: {stderr}");
        assert!(stderr.contains("--otlp-endpoint: `"), "{stderr}");
        assert!(stderr.contains("is not a collector URL"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_collector_down_requests_succeed_and_the_lost_spans_are_counted() {
    let env = or_skip!(TestEnv::for_docker());
    // A port that was free a moment ago and that nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let endpoint = format!("http://{}", closed.local_addr().expect("the bound address"));
    drop(closed);
    let mut server = env.serve(&["--otlp-endpoint", &endpoint]).await;

    let chat_id = chat();
    let (status, body) = server.put_sandbox(&chat_id).await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = server.delete_sandbox(&chat_id).await;
    assert!(status.is_success(), "{status} {body}");
    let lost = eventually(Duration::from_secs(30), || async {
        let metrics = server.metrics().await;
        metric(&metrics, "otlp_spans_dropped_total{reason=\"export_failed\"}")
            .filter(|lost| *lost > 0.0)
    })
    .await;
    assert!(lost.is_some(), "no lost span counted:\n{}", server.metrics().await);
    let exit = server.terminate();
    assert!(exit.success(), "{exit:?}\n{}", server.logs());
}
