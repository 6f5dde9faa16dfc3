//! The table of every route the server answers: method and path template.
//!
//! warp dispatches the requests; this table gives the edge what warp does not: the
//! route template used as the metrics and log label (bounded cardinality, no ids), and
//! the `Allow` header of a 405. A test checks that each entry is really served.

use http::Method;

/// One route: `{name}` segments match any single path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDef {
    pub method: &'static str,
    pub path: &'static str,
}

const fn route(method: &'static str, path: &'static str) -> RouteDef {
    RouteDef { method, path }
}

/// Every route, grouped by module.
pub const ROUTES: &[RouteDef] = &[
    // http::health
    route("GET", "/healthz"),
    route("GET", "/readyz"),
    route("GET", "/metrics"),
    route("GET", "/openapi.json"),
    // auth
    route("POST", "/v1/auth/register"),
    route("POST", "/v1/auth/login"),
    route("POST", "/v1/auth/refresh"),
    route("POST", "/v1/auth/logout"),
    // accounts
    route("GET", "/v1/me"),
    route("POST", "/v1/admin/users"),
    route("GET", "/v1/admin/users/{id}"),
    route("POST", "/v1/admin/users/{id}/disable"),
    // audit
    route("GET", "/v1/admin/audit"),
    route("GET", "/v1/me/access-log"),
    // records
    route("POST", "/v1/patients"),
    route("GET", "/v1/patients"),
    route("GET", "/v1/patients/{id}"),
    route("PATCH", "/v1/patients/{id}"),
    route("POST", "/v1/patients/{id}/break-glass"),
    route("GET", "/v1/admin/break-glass"),
    route("POST", "/v1/patients/{id}/notes"),
    route("GET", "/v1/patients/{id}/notes"),
    route("GET", "/v1/patients/{id}/notes/{note_id}"),
    route("PUT", "/v1/patients/{id}/notes/{note_id}"),
    route("GET", "/v1/patients/{id}/notes/{note_id}/versions"),
    route("POST", "/v1/patients/{id}/notes/{note_id}/sign"),
    route("POST", "/v1/patients/{id}/notes/{note_id}/amendments"),
    // scheduling
    route("POST", "/v1/providers"),
    route("GET", "/v1/providers"),
    route("GET", "/v1/providers/{id}"),
    route("PATCH", "/v1/providers/{id}"),
    route("GET", "/v1/providers/{id}/appointment-types"),
    route("POST", "/v1/providers/{id}/appointment-types"),
    route("PATCH", "/v1/providers/{id}/appointment-types/{type_id}"),
    route("GET", "/v1/providers/{id}/availability"),
    route("PUT", "/v1/providers/{id}/availability/weekly"),
    route("POST", "/v1/providers/{id}/availability/overrides"),
    route(
        "DELETE",
        "/v1/providers/{id}/availability/overrides/{override_id}",
    ),
    route("GET", "/v1/providers/{id}/slots"),
    route("POST", "/v1/appointments"),
    route("GET", "/v1/appointments"),
    route("GET", "/v1/appointments/{id}"),
    route("POST", "/v1/appointments/{id}/confirm"),
    route("POST", "/v1/appointments/{id}/cancel"),
    route("POST", "/v1/appointments/{id}/reschedule"),
    route("POST", "/v1/appointments/{id}/check-in"),
    route("POST", "/v1/appointments/{id}/no-show"),
    route("POST", "/v1/appointments/{id}/complete"),
    route("POST", "/v1/appointments/{id}/entered-in-error"),
    // realtime and notifications
    route("POST", "/v1/ws/ticket"),
    route("GET", "/v1/ws"),
    route("GET", "/v1/me/notifications"),
    route("POST", "/v1/me/notifications/{id}/read"),
    // consultations
    route("GET", "/v1/consultations/{id}"),
    route("GET", "/v1/consultations/{id}/ice-servers"),
];

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

/// The template of the route serving `method` on `path`, if any. A path that exists
/// only under other methods still yields its template (the label of its 405).
pub fn template_for(method: &Method, path: &str) -> Option<&'static str> {
    let mut fallback = None;
    for def in ROUTES.iter().filter(|d| matches(d.path, path)) {
        if def.method == method.as_str() || (method == Method::HEAD && def.method == "GET") {
            return Some(def.path);
        }
        fallback.get_or_insert(def.path);
    }
    fallback
}

/// The methods served on `path`, for a 405's `Allow` header.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = ROUTES
        .iter()
        .filter(|d| matches(d.path, path))
        .map(|d| d.method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_ids_but_not_extra_segments() {
        assert_eq!(
            template_for(
                &Method::POST,
                "/v1/admin/users/0190f0e2-0000-7000-8000-000000000000/disable"
            ),
            Some("/v1/admin/users/{id}/disable")
        );
        assert_eq!(template_for(&Method::GET, "/v1/me/extra"), None);
        assert_eq!(template_for(&Method::GET, "/v1/admin/users//disable"), None);
    }

    #[test]
    fn a_path_under_another_method_reports_what_it_allows() {
        assert_eq!(allowed_methods("/v1/auth/login"), vec!["POST"]);
        assert_eq!(
            template_for(&Method::GET, "/v1/auth/login"),
            Some("/v1/auth/login")
        );
    }
}
