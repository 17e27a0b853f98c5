//! The Alliance dialect in front of a Keystone-protected Glance, with the gateway holding
//! credentials per environment: two environments that cannot reach each other's images, and
//! callers that cannot act for an environment without proof.
//!
//! Needs a real Keystone and Glance: `scripts/test.sh` starts them (`keystone.sh`,
//! `GLANCE_AUTH=keystone glance.sh`), sets `IG_TEST_KEYSTONE_CREDENTIALS` (the seeded
//! credentials.json) and `IG_TEST_KEYSTONE_GLANCE_URL`, and runs these with `--ignored`.

mod common;

use common::{client, send, Answer, Gateway, Harness};
use image_gateway::config::{Credentials, IdentityMode, NamespaceConfig, Secret};
use serde_json::{json, Value};

struct World {
    gw: Gateway,
    creds: Value,
    env_a: String,
    env_b: String,
}

fn world() -> World {
    let path = std::env::var("IG_TEST_KEYSTONE_CREDENTIALS")
        .expect("IG_TEST_KEYSTONE_CREDENTIALS: run through scripts/test.sh");
    let glance = std::env::var("IG_TEST_KEYSTONE_GLANCE_URL").expect("IG_TEST_KEYSTONE_GLANCE_URL");
    let creds: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let env_a = creds["app_cred_a"]["project_id"].as_str().unwrap().to_owned();
    let env_b = creds["user_b"]["project_id"].as_str().unwrap().to_owned();
    let gw = Harness::get().gateway(|c| {
        c.alliance.namespaces.insert(
            "cloud".into(),
            NamespaceConfig {
                glance_url: Some(glance.parse().unwrap()),
                identity: IdentityMode::GatewayCredentials,
                trusted_callers: common::loopback_callers(),
                ..Default::default()
            },
        );
        // Only tokens prove anything here; and a trusted caller limited to environment A.
        let strict = NamespaceConfig { glance_url: Some(glance.parse().unwrap()), ..Default::default() };
        c.alliance.namespaces.insert("strict".into(), strict);
        let mut listed = c.alliance.namespaces["cloud"].clone();
        listed.trusted_callers[0].environments = vec![env_a.clone()];
        c.alliance.namespaces.insert("listed".into(), listed);
        let mut afar = c.alliance.namespaces["cloud"].clone();
        afar.trusted_callers[0].networks = vec!["192.0.2.0/24".into()];
        c.alliance.namespaces.insert("afar".into(), afar);
        c.keystone.url = Some(creds["keystone_url"].as_str().unwrap().parse().unwrap());
        // A through an application credential, B through a password.
        let a = Credentials {
            application_credential_id: Some(creds["app_cred_a"]["id"].as_str().unwrap().into()),
            application_credential_secret: Some(Secret::new(creds["app_cred_a"]["secret"].as_str().unwrap())),
            ..Default::default()
        };
        let b = Credentials {
            username: Some(creds["user_b"]["username"].as_str().unwrap().into()),
            password: Some(Secret::new(creds["user_b"]["password"].as_str().unwrap())),
            ..Default::default()
        };
        c.keystone.environments.insert(env_a.clone(), a);
        c.keystone.environments.insert(env_b.clone(), b);
    });
    World { gw, creds, env_a, env_b }
}

impl World {
    async fn call(&self, env: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call_in("cloud", env, None, method, path, body).await
    }

    async fn call_in(
        &self,
        ns: &str,
        env: &str,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = client()
            .request(method.parse().unwrap(), format!("{}{path}", self.gw.base))
            .header("x-target-ns", ns)
            .header("x-environment-id", env);
        if let Some(token) = token {
            req = req.header("x-auth-token", token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        send(req).await
    }

    /// A token of user B's own, scoped to environment B, as a client would get it.
    async fn token_of_b(&self) -> String {
        user_token(&self.creds, "user_b").await
    }

    /// A private image of environment A, made through the gateway: its name and id.
    async fn image_of_a(&self, prefix: &str) -> (String, Value) {
        let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        let created = self.call(&self.env_a, "POST", "/images", Some(json!({"image": {"name": name}}))).await;
        assert_eq!(created.status, 201, "{}", created.text);
        (name, created.json())
    }
}

/// A password token of the seeded `user` (`user_a`, `user_b`), scoped to its project.
async fn user_token(creds: &Value, user: &str) -> String {
    let u = &creds[user];
    let auth = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": u["username"], "domain": {"name": "Default"}, "password": u["password"]}}},
        "scope": {"project": {"id": u["project_id"]}}}});
    let url = format!("{}/auth/tokens", creds["keystone_url"].as_str().unwrap().trim_end_matches('/'));
    let issued = client().post(url).json(&auth).send().await.unwrap();
    assert_eq!(issued.status().as_u16(), 201);
    issued.headers()["x-subject-token"].to_str().unwrap().to_owned()
}

#[tokio::test]
#[ignore = "needs a real Keystone and Glance: scripts/test.sh runs it"]
async fn no_caller_acts_for_an_environment_without_proof() {
    let w = world();
    let (name, image) = w.image_of_a("a-guarded").await;
    let id = image["id"].as_str().unwrap().to_owned();
    let token_b = w.token_of_b().await;
    let routes = [
        ("GET", "/images".to_owned(), None),
        ("POST", "/images".to_owned(), Some(json!({"image": {"name": "intruder"}}))),
        ("GET", format!("/images/{id}"), None),
        ("GET", format!("/images/{name}"), None),
        ("PATCH", format!("/images/{id}"), Some(json!({"image": {"name": "stolen"}}))),
        ("PUT", format!("/images/{name}"), Some(json!({"image": {"name": "stolen"}}))),
        ("DELETE", format!("/images/{id}"), None),
    ];
    for (method, path, body) in &routes {
        for (ns, token, status) in [
            // Anyone naming A, where only tokens count; and where callers are trusted, from afar
            // (the gateway holds A's credentials, and must not use them for this caller).
            ("strict", None, 401),
            ("afar", None, 401),
            // B's valid token naming A.
            ("strict", Some(token_b.as_str()), 403),
            ("cloud", Some(token_b.as_str()), 403),
            // A forged token.
            ("strict", Some("forged"), 401),
        ] {
            let a = w.call_in(ns, &w.env_a, token, method, path, body.clone()).await;
            assert_eq!(a.status, status, "{ns} {method} {path} token {}: {}", token.is_some(), a.text);
        }
        // A trusted caller outside its environments: limited to A, naming B.
        let a = w.call_in("listed", &w.env_b, None, method, path, body.clone()).await;
        assert_eq!(a.status, 403, "listed {method} {path}: {}", a.text);
    }
    // Nothing happened to A's image, and the proofs that hold work.
    let shown = w.call_in("listed", &w.env_a, None, "GET", &format!("/images/{id}"), None).await;
    assert_eq!((shown.status, shown.json()["name"].clone()), (200, json!(name)), "{}", shown.text);
    let own = w.call_in("strict", &w.env_b, Some(&token_b), "GET", "/images", None).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert!(!own.text.contains(&id), "B sees A's image");
    assert_eq!(w.call(&w.env_a, "DELETE", &format!("/images/{id}"), None).await.status, 200);
}

#[tokio::test]
#[ignore = "needs a real Keystone and Glance: scripts/test.sh runs it"]
async fn environments_are_isolated_on_a_keystone_protected_glance() {
    let w = world();
    let (name, image) = w.image_of_a("a-private").await;
    let id = image["id"].as_str().unwrap().to_owned();
    assert_eq!(image["owner"], json!(w.env_a));
    assert!(w.call(&w.env_a, "GET", "/images", None).await.text.contains(&id));

    for (method, path, body) in [
        ("GET", format!("/images/{id}"), None),
        ("GET", format!("/images/{name}"), None),
        ("PATCH", format!("/images/{id}"), Some(json!({"image": {"name": "stolen"}}))),
        ("PUT", format!("/images/{name}"), Some(json!({"image": {"name": "stolen"}}))),
        ("DELETE", format!("/images/{id}"), None),
        ("DELETE", format!("/images/{name}"), None),
    ] {
        let b = w.call(&w.env_b, method, &path, body).await;
        assert_eq!(b.status, 404, "B {method} {path}: {}", b.text);
    }
    assert!(!w.call(&w.env_b, "GET", "/images", None).await.text.contains(&id), "B lists A's image");

    let a = w.call(&w.env_a, "PATCH", &format!("/images/{id}"), Some(json!({"image": {"min_ram": 128}}))).await;
    assert_eq!((a.status, a.json()["min_ram"].clone(), a.json()["name"].clone()), (200, json!(128), json!(name)));
    assert_eq!(w.call(&w.env_a, "DELETE", &format!("/images/{name}"), None).await.status, 200);
}

#[tokio::test]
#[ignore = "needs a real Keystone and Glance: scripts/test.sh runs it"]
async fn client_tokens_pass_through_and_unknown_environments_are_refused() {
    let w = world();
    // A token of user B's own, sent by the client: checked, then used as is.
    let token = w.token_of_b().await;
    let answer = send(
        client()
            .post(format!("{}/images", w.gw.base))
            .header("x-target-ns", "cloud")
            .header("x-environment-id", &w.env_b)
            .header("x-auth-token", &token)
            .json(&json!({"image": {"name": "with-my-token"}})),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.json()["owner"], json!(w.env_b));
    // A bad token of the client's own is the client's problem: a 401, never a retry with ours.
    let bad = send(
        client()
            .get(format!("{}/images", w.gw.base))
            .header("x-target-ns", "cloud")
            .header("x-environment-id", &w.env_b)
            .header("x-auth-token", "forged"),
    )
    .await;
    assert_eq!(bad.status, 401, "{}", bad.text);
    // An environment the gateway holds no credentials for.
    let stranger = w.call("0123456789abcdef0123456789abcdef", "GET", "/images", None).await;
    assert_eq!(stranger.status, 401, "{}", stranger.text);
    assert!(stranger.json()["error"]["message"].as_str().unwrap().contains("No credentials"));
}

#[tokio::test]
#[ignore = "needs a real Keystone and Glance: scripts/test.sh runs it"]
async fn nova_tokens_are_validated_when_asked() {
    let path = std::env::var("IG_TEST_KEYSTONE_CREDENTIALS").expect("IG_TEST_KEYSTONE_CREDENTIALS");
    let glance = std::env::var("IG_TEST_KEYSTONE_GLANCE_URL").expect("IG_TEST_KEYSTONE_GLANCE_URL");
    let creds: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let keystone = creds["keystone_url"].as_str().unwrap().to_owned();
    let gw = Harness::get().gateway(|c| {
        c.glance.url = Some(glance.parse().unwrap());
        c.keystone.url = Some(keystone.parse().unwrap());
        c.keystone.validate_nova_tokens = true;
    });
    let project = creds["user_a"]["project_id"].as_str().unwrap().to_owned();
    let token = user_token(&creds, "user_a").await;
    let get = |path: String, token: Option<&str>| {
        let mut req = client().get(format!("{}{path}", gw.base));
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        send(req)
    };
    assert_eq!(get("/v2.1/images".into(), Some(&token)).await.status, 200);
    assert_eq!(get(format!("/v2.1/{project}/images"), Some(&token)).await.status, 200);
    let a = get("/v2.1/images".into(), None).await;
    assert_eq!((a.status, a.json()["unauthorized"]["code"].clone()), (401, json!(401)));
    assert_eq!(get("/v2.1/images".into(), Some("forged")).await.status, 401);
    // The URL names another project than the token's: Nova's 400.
    let a = get("/v2.1/0123456789abcdef0123456789abcdef/images".into(), Some(&token)).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.json()["badRequest"]["message"].as_str().unwrap().contains("doesn't match Context's project_id"));
}
