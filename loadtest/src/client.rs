//! A thin JSON client for the flashsale API.

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// With several instances, how long an admin request waits for one before trying the next.
const FAILOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// The server under test: one instance, or several behind one imagined load balancer. Cheap
/// to clone (the HTTP pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The instances' base URLs; admin requests go to the first one that accepts a connection.
    bases: Vec<String>,
    admin_token: String,
    jwt_secret: String,
}

/// A response: status, `ETag` if any, and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub body: Value,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, admin_token: &str, jwt_secret: &str) -> Client {
        Client {
            http: reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("a plain HTTP client builds"),
            bases: vec![base.trim_end_matches('/').to_owned()],
            admin_token: admin_token.to_owned(),
            jwt_secret: jwt_secret.to_owned(),
        }
    }

    /// The same deployment with one more instance, at `base`.
    pub fn and_instance(mut self, base: &str) -> Client {
        self.bases.push(base.trim_end_matches('/').to_owned());
        self
    }

    /// Sends a request; `admin` adds the admin token, `if_match` the header. An instance that
    /// refuses the connection (it is down), or of several one that does not answer within
    /// [`FAILOVER_AFTER`] (it is frozen), is passed over for the next one.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        admin: bool,
        if_match: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let mut sent = None;
        for base in &self.bases {
            let mut request = self.http.request(method.clone(), format!("{base}{path}"));
            if admin {
                request = request.bearer_auth(&self.admin_token);
            }
            if let Some(tag) = if_match {
                request = request.header("if-match", tag);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if self.bases.len() > 1 {
                // Another instance can answer: a frozen one is not waited for.
                request = request.timeout(FAILOVER_AFTER);
            }
            let result = request.send().await;
            let down = result.as_ref().is_err_and(|e| e.is_connect() || e.is_timeout());
            sent = Some(result);
            if !down {
                break;
            }
        }
        let response = sent.context("no instance to send to")?.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await.with_context(|| format!("{method} {path}: reading the body"))?;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok(Reply { status, etag, body })
    }

    /// A public document that is not JSON (the draw's entrants), from the first instance.
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let base = self.bases.first().context("no instance to send to")?;
        let response = self.http.get(format!("{base}{path}")).send().await?.error_for_status()?;
        Ok(response.text().await?)
    }

    /// A JWT for `user` minted as an identity provider would (HS256 with the deployment's JWT
    /// secret), valid for an hour.
    pub fn buyer_jwt(&self, user: &str) -> anyhow::Result<String> {
        self.buyer_jwt_until(user, chrono::Utc::now().timestamp() + 3600)
    }

    /// A JWT for `user` that expires at `exp` (Unix seconds): the same bytes each time for the
    /// same buyer, as a real client keeps its token.
    pub fn buyer_jwt_until(&self, user: &str, exp: i64) -> anyhow::Result<String> {
        let claims = serde_json::json!({ "sub": user, "exp": exp });
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.jwt_secret.as_bytes()),
        )?)
    }

    /// A shopper's `POST` of a ready JSON body with an `Idempotency-Key`, as `authorization`'s
    /// buyer (`Bearer <jwt>`), answering only the status: load scenarios prepare their requests
    /// before the clock starts and read no more of the answer than they check.
    pub async fn post_prepared(
        &self,
        url: &str,
        authorization: &str,
        key: &str,
        body: &'static [u8],
    ) -> anyhow::Result<StatusCode> {
        let response = self
            .http
            .post(url)
            .header("authorization", authorization)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        // Drain the body so the connection goes back to the pool.
        response.bytes().await?;
        Ok(status)
    }

    /// The first instance's base URL.
    pub fn base(&self) -> &str {
        &self.bases[0]
    }

    /// Every instance's base URL.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// A shopper's request: a JWT for `user` (see [`Client::buyer_jwt`]) and their last queue
    /// ticket if any.
    pub async fn buyer(&self, method: Method, path: &str, user: &str, ticket: Option<&str>) -> anyhow::Result<Reply> {
        let jwt = self.buyer_jwt(user)?;
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base())).bearer_auth(jwt);
        if let Some(ticket) = ticket {
            request = request.header("x-queue-ticket", ticket);
        }
        let response = request.send().await.with_context(|| format!("{method} {path} as {user}"))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok(Reply { status, etag: None, body })
    }

    /// An admin request that must succeed with `expected`.
    pub async fn admin_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> anyhow::Result<Reply> {
        let reply = self.send(method.clone(), path, body, true, None).await?;
        anyhow::ensure!(
            reply.status == expected,
            "{method} {path}: expected {expected}, got {} {}",
            reply.status,
            reply.body
        );
        Ok(reply)
    }
}
