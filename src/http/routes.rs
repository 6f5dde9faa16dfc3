//! The table of every route the server answers: method and path template.
//!
//! warp dispatches the requests; this table gives the edge what warp does not: the
//! route template used as the metrics and log label (bounded cardinality, no ids), and
//! the `Allow` header of a 405. It is read from the OpenAPI document at start-up; a
//! test checks that each entry is really served.

use std::sync::Arc;

use http::Method;

/// One route: `{name}` segments match any single path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDef {
    pub method: String,
    pub path: Arc<str>,
}

/// Every route the server answers, as the OpenAPI document lists them
/// (`api::openapi::route_table`, at start-up): nothing to keep in step by hand.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<RouteDef>,
}

impl RouteTable {
    pub fn new(routes: Vec<RouteDef>) -> RouteTable {
        RouteTable { routes }
    }

    pub fn routes(&self) -> &[RouteDef] {
        &self.routes
    }

    /// The template of the route serving `method` on `path`, if any. A path that
    /// exists only under other methods still yields its template (the label of its 405).
    pub fn template_for(&self, method: &Method, path: &str) -> Option<Arc<str>> {
        let mut fallback = None;
        for def in self.routes.iter().filter(|d| matches(&d.path, path)) {
            if def.method == method.as_str() || (method == Method::HEAD && def.method == "GET") {
                return Some(def.path.clone());
            }
            fallback.get_or_insert_with(|| def.path.clone());
        }
        fallback
    }

    /// The methods served on `path`, for a 405's `Allow` header.
    pub fn allowed_methods(&self, path: &str) -> Vec<&str> {
        let mut methods: Vec<&str> = self
            .routes
            .iter()
            .filter(|d| matches(&d.path, path))
            .map(|d| d.method.as_str())
            .collect();
        methods.sort_unstable();
        methods.dedup();
        methods
    }
}

fn matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) => {
                let is_param = ts.starts_with('{') && ts.ends_with('}');
                if !(is_param && !ps.is_empty() || ts == ps) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let def = |method: &str, path: &str| RouteDef {
            method: method.into(),
            path: path.into(),
        };
        RouteTable::new(vec![
            def("GET", "/v1/me"),
            def("POST", "/v1/auth/login"),
            def("POST", "/v1/admin/users/{id}/disable"),
        ])
    }

    #[test]
    fn templates_match_ids_but_not_extra_segments() {
        assert_eq!(
            table()
                .template_for(
                    &Method::POST,
                    "/v1/admin/users/0190f0e2-0000-7000-8000-000000000000/disable"
                )
                .as_deref(),
            Some("/v1/admin/users/{id}/disable")
        );
        assert_eq!(table().template_for(&Method::GET, "/v1/me/extra"), None);
        assert_eq!(
            table().template_for(&Method::GET, "/v1/admin/users//disable"),
            None
        );
    }

    #[test]
    fn a_path_under_another_method_reports_what_it_allows() {
        assert_eq!(table().allowed_methods("/v1/auth/login"), vec!["POST"]);
        assert_eq!(
            table().template_for(&Method::GET, "/v1/auth/login").as_deref(),
            Some("/v1/auth/login")
        );
    }
}
