//! The service configuration's optional keys: each may be left out.

use super::Config;

#[test]
fn optional_keys_left_out_are_unset() {
    let yaml = "
manifests_git: {url: 'file:///m'}
webhooks:
  distribution: [{name: d}]
alerts:
  sinks:
    - {name: w, webhook: {url: 'http://w'}}
    - {name: s, slack: {}}
    - {name: a, alertmanager: {url: 'http://a'}}
    - {name: p, pubsub: {project: p, topic: t}}
triage:
  tokens: [{name: n}]
pubsub:
  pull: {project: p, subscription: s}
";
    let config: Config = serde_saphyr::from_str(yaml).unwrap();
    let git = config.manifests_git.unwrap();
    assert_eq!((git.token_env, git.token_file), (None, None));
    let endpoint = &config.webhooks.distribution[0];
    assert!(endpoint.registry.is_none());
    assert_eq!((&endpoint.token, &endpoint.token_env), (&None, &None));
    let [w, s, a, p] = &config.alerts.sinks[..] else {
        panic!("four sinks");
    };
    assert!(w.min_severity.is_none() && w.slack.is_none() && w.pubsub.is_none());
    assert!(w.alertmanager.is_none() && s.webhook.is_none());
    let webhook = w.webhook.as_ref().unwrap();
    assert_eq!(
        (&webhook.hmac_secret, &webhook.hmac_secret_env),
        (&None, &None)
    );
    let slack = s.slack.as_ref().unwrap();
    assert_eq!((&slack.url, &slack.url_env), (&None, &None));
    assert_eq!(a.alertmanager.as_ref().unwrap().generator_url, None);
    assert_eq!(p.pubsub.as_ref().unwrap().endpoint, None);
    let token = &config.triage.tokens[0];
    assert_eq!((&token.token_env, &token.token_file), (&None, &None));
    assert_eq!(config.pubsub.pull.unwrap().endpoint, None);
}
