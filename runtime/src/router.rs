//! A small router: literal segments, `{name}` parameters, a trailing `*` wildcard; 405 with
//! `Allow` when the path matches but the method does not; when nothing matches the path, the
//! fallback of the deepest nested router whose prefix matches, else the router's own
//! [`fallback`](Router::fallback), else a plain 404. HEAD is served by GET routes (the runtime
//! drops the body). Routes are tried in the order they were added, nested ones where they were
//! nested; the path is matched as sent (not percent-decoded).

use crate::handler::{Handler, Method, Params, Request, Response, StatusCode};

#[derive(Clone)]
enum Segment {
    Literal(String),
    Param(String),
    /// Matches the rest of the path (zero or more segments), captured as `*`.
    Rest,
}

struct RouteEntry {
    method: Method,
    segments: Vec<Segment>,
    /// Whether the pattern captures anything (if not, the request is passed on as it is).
    captures: bool,
    handler: Box<dyn Handler>,
}

/// The fallback of a nested router: answers paths under its prefix that no route matches.
struct ScopedFallback {
    prefix: Vec<Segment>,
    handler: Box<dyn Handler>,
}

/// A per-thread setup hook ([`Router::prepare`]).
type Prepare = Box<dyn Fn() + Send + Sync + 'static>;

/// Routes requests to handlers by method and path pattern. Built at startup.
#[derive(Default)]
pub struct Router {
    routes: Vec<RouteEntry>,
    fallback: Option<Box<dyn Handler>>,
    scoped_fallbacks: Vec<ScopedFallback>,
    prepare: Vec<Prepare>,
}

/// Splits a pattern into segments.
///
/// # Panics
/// When a `*` is not the last segment: a programmer error found at startup.
fn parse_pattern(pattern: &str) -> Vec<Segment> {
    let parts: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let mut segments = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let segment = if *part == "*" {
            assert!(index + 1 == parts.len(), "`*` must be the last segment of {pattern}");
            Segment::Rest
        } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Segment::Param(name.to_string())
        } else {
            Segment::Literal(part.to_string())
        };
        segments.push(segment);
    }
    segments
}

fn capture_count(segments: &[Segment]) -> usize {
    segments.iter().filter(|s| !matches!(s, Segment::Literal(_))).count()
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a route. Patterns look like `/users/{id}/posts` or `/static/*`.
    ///
    /// # Panics
    /// When the pattern is malformed (a `*` that is not last, more than
    /// [`crate::handler::PARAMS_MAX`] parameters): a programmer error found at startup.
    pub fn route(mut self, method: Method, pattern: &str, handler: impl Handler) -> Self {
        let segments = parse_pattern(pattern);
        let captures = capture_count(&segments);
        assert!(captures <= crate::handler::PARAMS_MAX, "too many parameters in {pattern}");
        self.routes.push(RouteEntry {
            method,
            segments,
            captures: captures > 0,
            handler: Box::new(handler),
        });
        self
    }

    pub fn get(self, pattern: &str, handler: impl Handler) -> Self {
        self.route(Method::GET, pattern, handler)
    }

    pub fn post(self, pattern: &str, handler: impl Handler) -> Self {
        self.route(Method::POST, pattern, handler)
    }

    pub fn put(self, pattern: &str, handler: impl Handler) -> Self {
        self.route(Method::PUT, pattern, handler)
    }

    pub fn delete(self, pattern: &str, handler: impl Handler) -> Self {
        self.route(Method::DELETE, pattern, handler)
    }

    /// Answers requests whose path no route matches (for any method) instead of the plain 404.
    /// A path that routes match for other methods still gets 405. Setting it again replaces it.
    pub fn fallback(mut self, handler: impl Handler) -> Self {
        self.fallback = Some(Box::new(handler));
        self
    }

    /// Mounts `router`'s routes under `prefix` (`/api`, `/users/{id}`): its `/items/{n}` is
    /// matched as `{prefix}/items/{n}`, with the prefix's parameters captured too, and the
    /// handlers see the whole path. Its fallback answers the paths under `prefix` that nothing
    /// matches; its `prepare` hooks join this router's.
    ///
    /// # Panics
    /// When `prefix` has a `*`, or a nested route would capture more than
    /// [`crate::handler::PARAMS_MAX`] parameters: programmer errors found at startup.
    pub fn nest(mut self, prefix: &str, router: Router) -> Self {
        let prefix_segments = parse_pattern(prefix);
        assert!(
            !prefix_segments.iter().any(|s| matches!(s, Segment::Rest)),
            "a nesting prefix has no `*`: {prefix}"
        );
        let prefixed = |segments: Vec<Segment>| {
            let mut whole = prefix_segments.clone();
            whole.extend(segments);
            let captures = capture_count(&whole);
            assert!(captures <= crate::handler::PARAMS_MAX, "too many parameters under {prefix}");
            whole
        };
        for route in router.routes {
            let segments = prefixed(route.segments);
            let captures = capture_count(&segments) > 0;
            self.routes.push(RouteEntry { segments, captures, ..route });
        }
        for scoped in router.scoped_fallbacks {
            let prefix = prefixed(scoped.prefix);
            self.scoped_fallbacks.push(ScopedFallback { prefix, ..scoped });
        }
        if let Some(handler) = router.fallback {
            let prefix = prefixed(Vec::new());
            self.scoped_fallbacks.push(ScopedFallback { prefix, handler });
        }
        self.prepare.extend(router.prepare);
        self
    }

    /// Runs `hook` once on each worker thread before it serves (and, under
    /// [`crate::testing`], before each call), while the process may still use the system
    /// allocator: for thread-local state that would otherwise be set up lazily inside a first
    /// request, in its arena, and wiped with it. Hooks run in the order they were added, after
    /// the `prepare_thread` of every route's handler and fallback.
    pub fn prepare(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.prepare.push(Box::new(hook));
        self
    }

    /// What answers a path no route matches.
    fn not_found<'a>(&'a self, request: &Request<'a>) -> Response<'a> {
        // The most specific prefix wins; between equals, the first nested.
        let mut best: Option<(usize, Params<'a>, &'a dyn Handler)> = None;
        for scoped in &self.scoped_fallbacks {
            let Some(params) = captured(&scoped.prefix, request.path, Match::Prefix) else {
                continue;
            };
            if best.as_ref().map_or(true, |(depth, _, _)| scoped.prefix.len() > *depth) {
                best = Some((scoped.prefix.len(), params, scoped.handler.as_ref()));
            }
        }
        if let Some((_, params, handler)) = best {
            return handler.handle(&Request { params: Some(params), ..request.clone() });
        }
        if let Some(fallback) = &self.fallback {
            return fallback.handle(request);
        }
        Response::text("not found\n").with_status(StatusCode::NOT_FOUND)
    }
}

/// Whether the segments must match the whole path or only its beginning (whole segments).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Match {
    Whole,
    Prefix,
}

/// Whether `path` matches `segments`; each parameter captured on the way goes to `capture`
/// (a route that captures nothing passes a no-op: no `Params` is built or copied for it, which
/// is the common case on the request path).
fn match_segments<'a>(
    segments: &'a [Segment],
    path: &'a str,
    how: Match,
    mut capture: impl FnMut(&'a str, &'a str),
) -> bool {
    let mut rest = path.trim_start_matches('/');
    for segment in segments {
        if let Segment::Rest = segment {
            capture("*", rest);
            return true;
        }
        let (part, tail) = rest.split_once('/').unwrap_or((rest, ""));
        match segment {
            Segment::Literal(literal) if literal == part => {}
            Segment::Param(name) if !part.is_empty() => capture(name, part),
            _ => return false,
        }
        rest = tail;
    }
    how == Match::Prefix || rest.is_empty()
}

/// The parameters `path` captures under `segments`, if it matches.
fn captured<'a>(segments: &'a [Segment], path: &'a str, how: Match) -> Option<Params<'a>> {
    let mut params = Params::default();
    match_segments(segments, path, how, |name, value| params.push(name, value)).then_some(params)
}

fn path_matches(segments: &[Segment], path: &str) -> bool {
    match_segments(segments, path, Match::Whole, |_, _| {})
}

impl Handler for Router {
    fn handle<'a>(&'a self, request: &Request<'a>) -> Response<'a> {
        // Routes of the request's method first (comparing methods is cheap); the others only
        // matter for a 405's Allow header.
        for route in &self.routes {
            let method_matches = route.method == request.method
                || (request.method == Method::HEAD && route.method == Method::GET);
            if !method_matches {
                continue;
            }
            if !route.captures {
                if path_matches(&route.segments, request.path) {
                    return route.handler.handle(request);
                }
            } else if let Some(params) = captured(&route.segments, request.path, Match::Whole) {
                let routed = Request { params: Some(params), ..request.clone() };
                return route.handler.handle(&routed);
            }
        }
        let mut allowed: Vec<&Method> = Vec::new();
        for route in &self.routes {
            if !path_matches(&route.segments, request.path) {
                continue;
            }
            if !allowed.contains(&&route.method) {
                allowed.push(&route.method);
            }
        }
        if allowed.is_empty() {
            return self.not_found(request);
        }
        let mut allow = String::new();
        for method in allowed {
            if !allow.is_empty() {
                allow.push_str(", ");
            }
            allow.push_str(method.as_str());
        }
        Response::text("method not allowed\n")
            .with_status(StatusCode::METHOD_NOT_ALLOWED)
            .header("allow", allow)
    }

    fn prepare_thread(&self) {
        for route in &self.routes {
            route.handler.prepare_thread();
        }
        for scoped in &self.scoped_fallbacks {
            scoped.handler.prepare_thread();
        }
        if let Some(fallback) = &self.fallback {
            fallback.prepare_thread();
        }
        for hook in &self.prepare {
            hook();
        }
    }
}

#[cfg(test)]
mod tests;
