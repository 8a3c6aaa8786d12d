//! Query parameters, validated by hand so every bad value is a JSON 400 naming the
//! parameter (axum's own extractors answer in plain text). Unknown parameters are refused
//! too: a misspelt filter that silently matched everything would mislead.

use std::collections::HashMap;

use super::error::ApiError;

pub(crate) const MAX_LIMIT: u64 = 1000;
pub(crate) const MAX_OFFSET: u64 = 1_000_000;

pub(crate) struct Params {
    map: HashMap<String, String>,
}

impl Params {
    /// Parses a raw query string; `allowed` lists the parameters the route knows.
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&'static str]) -> Result<Params, ApiError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let Some(name) = allowed.iter().find(|a| **a == k) else {
                return Err(ApiError::BadParameter(
                    "query",
                    format!(
                        "unknown parameter `{}` (this route takes: {})",
                        k.chars().take(64).collect::<String>(),
                        allowed.join(", ")
                    ),
                ));
            };
            if map.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(ApiError::BadParameter(name, "given more than once".into()));
            }
        }
        Ok(Params { map })
    }

    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// An integer in `0..=max`, or `default` when absent.
    pub(crate) fn uint(&self, name: &'static str, default: u64, max: u64) -> Result<u64, ApiError> {
        match self.str(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                Ok(_) => Err(ApiError::BadParameter(name, format!("at most {max}"))),
                Err(_) => Err(ApiError::BadParameter(
                    name,
                    "not a non-negative integer".into(),
                )),
            },
        }
    }

    /// `limit`: 1 to [`MAX_LIMIT`].
    pub(crate) fn limit(&self, default: u64) -> Result<u64, ApiError> {
        let n = self.uint("limit", default, MAX_LIMIT)?;
        if n == 0 {
            return Err(ApiError::BadParameter("limit", "at least 1".into()));
        }
        Ok(n)
    }

    /// An IP address, normalised (so `::ffff:10.0.0.1` and `10.0.0.1` do not differ).
    pub(crate) fn ip(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        self.str(name)
            .map(|v| {
                v.parse::<std::net::IpAddr>()
                    .map(|a| a.to_canonical().to_string())
                    .map_err(|_| ApiError::BadParameter(name, "not an IPv4 or IPv6 address".into()))
            })
            .transpose()
    }

    /// A start time in Unix ns: RFC 3339, or an age before now (`90m`, `24h`, `30d`);
    /// `default` (an age) when absent.
    pub(crate) fn since(&self, name: &'static str, default: &str) -> Result<i64, ApiError> {
        let v = self.str(name).unwrap_or(default);
        crate::feed::since(v).ok_or_else(|| {
            ApiError::BadParameter(
                name,
                "an RFC 3339 time (2026-12-01T00:00:00Z) or an age: N followed by m, h or d".into(),
            )
        })
    }

    /// One of `options`, or `default` when absent.
    pub(crate) fn one_of(
        &self,
        name: &'static str,
        options: &[&'static str],
        default: Option<&'static str>,
    ) -> Result<Option<&'static str>, ApiError> {
        match self.str(name) {
            None => Ok(default),
            Some(v) => options
                .iter()
                .find(|o| **o == v)
                .copied()
                .map(Some)
                .ok_or_else(|| {
                    ApiError::BadParameter(name, format!("one of: {}", options.join(", ")))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let p = Params::parse(
            Some("limit=5&attacker_ip=10.0.0.1"),
            &["limit", "attacker_ip"],
        )
        .unwrap();
        assert_eq!(p.limit(100).unwrap(), 5);
        assert_eq!(p.ip("attacker_ip").unwrap().as_deref(), Some("10.0.0.1"));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=abc",
            "limit=1&limit=2",
        ] {
            let p = Params::parse(Some(bad), &["limit"]);
            assert!(p.and_then(|p| p.limit(100)).is_err(), "{bad}");
        }
        assert!(Params::parse(Some("nope=1"), &["limit"]).is_err());
        let p = Params::parse(Some("ip=%ZZ"), &["ip"]).unwrap();
        assert!(p.ip("ip").is_err());
        let p = Params::parse(Some("ip=::ffff:10.0.0.1"), &["ip"]).unwrap();
        assert_eq!(p.ip("ip").unwrap().as_deref(), Some("10.0.0.1"));
        let p = Params::parse(Some("sort=risk"), &["sort"]).unwrap();
        assert_eq!(
            p.one_of("sort", &["risk", "last_seen"], None).unwrap(),
            Some("risk")
        );
        let p = Params::parse(Some("sort=x"), &["sort"]).unwrap();
        assert!(p.one_of("sort", &["risk"], None).is_err());
    }
}
