//! A small router: literal segments, `{name}` parameters, a trailing `*` wildcard; 404 when
//! nothing matches the path, 405 with `Allow` when the path matches but the method does not.
//! HEAD is served by GET routes (the runtime drops the body).

use crate::handler::{Handler, Method, Params, Request, Response, StatusCode};

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

/// Routes requests to handlers by method and path pattern. Built at startup.
#[derive(Default)]
pub struct Router {
    routes: Vec<RouteEntry>,
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
        let captures = segments.iter().filter(|s| !matches!(s, Segment::Literal(_))).count();
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
}

fn match_path<'a>(segments: &'a [Segment], path: &'a str) -> Option<Params<'a>> {
    let mut params = Params::default();
    let mut rest = path.trim_start_matches('/');
    for segment in segments {
        if let Segment::Rest = segment {
            params.push("*", rest);
            return Some(params);
        }
        let (part, tail) = rest.split_once('/').unwrap_or((rest, ""));
        match segment {
            Segment::Literal(literal) if literal == part => {}
            Segment::Param(name) if !part.is_empty() => params.push(name, part),
            _ => return None,
        }
        rest = tail;
    }
    rest.is_empty().then_some(params)
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
            if let Some(params) = match_path(&route.segments, request.path) {
                if !route.captures {
                    return route.handler.handle(request);
                }
                let routed = Request { params, ..request.clone() };
                return route.handler.handle(&routed);
            }
        }
        let mut allowed: Vec<&Method> = Vec::new();
        for route in &self.routes {
            if match_path(&route.segments, request.path).is_none() {
                continue;
            }
            if !allowed.contains(&&route.method) {
                allowed.push(&route.method);
            }
        }
        if allowed.is_empty() {
            return Response::text("not found\n").with_status(StatusCode::NOT_FOUND);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(pattern: &str) -> Vec<Segment> {
        let router = Router::new().get(pattern, crate::handler_fn(|_| Response::text("")));
        router.routes.into_iter().next().unwrap().segments
    }

    #[test]
    fn params_and_wildcards() {
        let s = segments("/users/{id}/posts");
        assert_eq!(match_path(&s, "/users/42/posts").unwrap().get("id"), Some("42"));
        assert!(match_path(&s, "/users//posts").is_none());
        assert!(match_path(&s, "/users/42").is_none());
        let s = segments("/static/*");
        assert_eq!(match_path(&s, "/static/a/b.css").unwrap().get("*"), Some("a/b.css"));
        assert_eq!(match_path(&s, "/static").unwrap().get("*"), Some(""));
        assert!(match_path(&segments("/"), "/").is_some());
    }
}
