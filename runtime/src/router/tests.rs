//! The router's tests: matching, parameters, methods and 405s, nested routers, fallbacks.

use super::*;

fn segments(pattern: &str) -> Vec<Segment> {
    let router = Router::new().get(pattern, crate::handler_fn(|_| Response::text("")));
    router.routes.into_iter().next().unwrap().segments
}

#[test]
fn params_and_wildcards() {
    let s = segments("/users/{id}/posts");
    assert_eq!(captured(&s, "/users/42/posts", Match::Whole).unwrap().get("id"), Some("42"));
    assert!(captured(&s, "/users//posts", Match::Whole).is_none());
    assert!(captured(&s, "/users/42", Match::Whole).is_none());
    let s = segments("/static/*");
    assert_eq!(captured(&s, "/static/a/b.css", Match::Whole).unwrap().get("*"), Some("a/b.css"));
    assert_eq!(captured(&s, "/static", Match::Whole).unwrap().get("*"), Some(""));
    assert!(captured(&segments("/"), "/", Match::Whole).is_some());
    let plain = segments("/a/b");
    assert!(path_matches(&plain, "/a/b") && !path_matches(&plain, "/a/b/c"));
    assert!(!path_matches(&plain, "/a") && !path_matches(&s, "/other/x"));
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::testing::{self, TestRequest};

fn say(text: &'static str) -> impl Handler {
    crate::handler_fn(move |_| Response::text(text))
}

fn echo_params() -> impl Handler {
    crate::handler_fn(|request| {
        let params: Vec<String> =
            request.params().iter().map(|(name, value)| format!("{name}={value}")).collect();
        Response::text(format!("{} {}", request.path(), params.join(",")))
    })
}

fn get(app: &Router, target: &str) -> (u16, String) {
    let response = testing::call(app, TestRequest::get(target));
    (response.status().as_u16(), response.text())
}

#[test]
fn a_fallback_answers_unmatched_paths_and_405_stays_405() {
    let plain = Router::new().get("/a", say("a"));
    assert_eq!(get(&plain, "/zzz"), (404, "not found\n".into()));
    let app = Router::new().get("/a", say("a")).fallback(crate::handler_fn(|request| {
        Response::text(format!("no {}\n", request.path())).with_status(StatusCode::GONE)
    }));
    assert_eq!(get(&app, "/a"), (200, "a".into()));
    assert_eq!(get(&app, "/zzz/y"), (410, "no /zzz/y\n".into()));
    let post = testing::call(&app, TestRequest::post("/a"));
    assert_eq!(post.status().as_u16(), 405);
    assert_eq!(post.header("allow"), Some("GET"));
}

#[test]
fn nested_routes_match_under_their_prefix_with_its_parameters() {
    let posts = Router::new().get("/", say("all posts")).get("/posts/{post}", echo_params());
    let app = Router::new()
        .get("/users/{id}/profile", say("profile"))
        .nest("/users/{id}", posts)
        .nest("/api/v1", Router::new().get("/static/*", echo_params()).post("/x", say("x")));
    assert_eq!(get(&app, "/users/7/posts/9"), (200, "/users/7/posts/9 id=7,post=9".into()));
    assert_eq!(get(&app, "/users/7"), (200, "all posts".into()));
    assert_eq!(get(&app, "/users/7/profile"), (200, "profile".into()));
    assert_eq!(get(&app, "/api/v1/static/a/b"), (200, "/api/v1/static/a/b *=a/b".into()));
    assert_eq!(get(&app, "/api/v1/x").0, 405);
    assert_eq!(get(&app, "/posts/9").0, 404);
    assert_eq!(get(&app, "/api/v2/x").0, 404);
}

#[test]
fn the_deepest_nested_fallback_answers_paths_under_its_prefix() {
    let v1 = Router::new()
        .get("/ping", say("pong"))
        .nest("/admin", Router::new().fallback(say("admin fallback")))
        .fallback(echo_params());
    let app = Router::new()
        .nest("/api/{version}", v1)
        .nest("/other", Router::new().get("/x", say("x")))
        .fallback(say("root fallback"));
    assert_eq!(get(&app, "/api/1/ping"), (200, "pong".into()));
    assert_eq!(get(&app, "/api/1/nothing"), (200, "/api/1/nothing version=1".into()));
    assert_eq!(get(&app, "/api/1/admin/x"), (200, "admin fallback".into()));
    assert_eq!(get(&app, "/api/1/adminx"), (200, "/api/1/adminx version=1".into()));
    assert_eq!(get(&app, "/api"), (200, "root fallback".into()));
    assert_eq!(get(&app, "/other/y"), (200, "root fallback".into()));
}

#[test]
fn prepare_runs_every_hook_and_every_handlers_prepare_thread_in_order() {
    struct Counted(Arc<AtomicUsize>);
    impl Handler for Counted {
        fn handle<'a>(&'a self, _: &Request<'a>) -> Response<'a> {
            Response::text("counted")
        }
        fn prepare_thread(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let handlers = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook = |name: &'static str| {
        let order = order.clone();
        move || order.lock().unwrap().push(name)
    };
    let nested = Router::new().get("/n", Counted(handlers.clone())).prepare(hook("nested"));
    let app = Router::new()
        .get("/a", Counted(handlers.clone()))
        .prepare(hook("first"))
        .nest("/x", nested.fallback(Counted(handlers.clone())))
        .fallback(Counted(handlers.clone()))
        .prepare(hook("last"));
    app.prepare_thread();
    assert_eq!(handlers.load(Ordering::SeqCst), 4);
    assert_eq!(*order.lock().unwrap(), ["first", "nested", "last"]);
    assert_eq!(get(&app, "/x/n"), (200, "counted".into()));
    assert_eq!(handlers.load(Ordering::SeqCst), 8, "testing::call prepares too");
}

#[test]
#[should_panic(expected = "a nesting prefix has no `*`")]
fn a_wildcard_in_a_nesting_prefix_is_refused() {
    let _ = Router::new().nest("/a/*", Router::new());
}
