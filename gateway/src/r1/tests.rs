use http::{HeaderMap, HeaderValue};

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

#[test]
fn the_protocol_examples_parse() {
    // PR-REST §4.1: GET /r1/INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE/v1/bar/zyggy?quu=1
    let target =
        parse_target("/r1/INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE/v1/bar/zyggy?quu=1")
            .unwrap();
    assert_eq!(
        target.service.to_string(),
        "INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE"
    );
    assert_eq!(target.path, "/v1/bar/zyggy");
    assert_eq!(target.query.as_deref(), Some("quu=1"));
    // §6.2: the service id alone, then a path.
    let target = parse_target("/r1/DEV/COM/222/TESTSERVICE/petstore/v2/pets/1124").unwrap();
    assert_eq!(
        (target.service.code(), target.path.as_str(), target.query),
        ("petstore", "/v2/pets/1124", None)
    );
    let bare = parse_target("/r1/EE/GOV/70000001/ehr/referrals").unwrap();
    assert_eq!((bare.path.as_str(), bare.query), ("", None));
    assert_eq!(
        parse_target("/r1/EE/GOV/70000001/ehr/referrals/")
            .unwrap()
            .path,
        "/"
    );
    // §4.2: parts are percent-encoded one by one.
    let encoded = parse_target("/r1/EE/GOV/7000%2D0001/ehr/get%20Patient").unwrap_err();
    assert!(
        matches!(encoded, RequestError::InvalidService(_)),
        "a space is not allowed in an identifier: {encoded:?}"
    );
    assert_eq!(
        parse_target("/r1/EE/GOV/7000%2D0001/ehr/getPatient")
            .unwrap()
            .service
            .provider()
            .member()
            .code(),
        "7000-0001"
    );

    let parsed = parse_headers(&headers(&[(
        "X-Road-Client",
        "INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1",
    )]))
    .unwrap();
    assert_eq!(
        parsed.client.to_string(),
        "INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1"
    );
    let member = parse_headers(&headers(&[
        ("x-road-client", "DEV/COM/222"),
        ("X-Road-Id", "fa2e18a5-c2cb-4d09-b994-f57727f7c3fb"),
        ("X-Road-UserId", "EE12345678901"),
        ("X-Road-Issue", "MT324223MSD"),
    ]))
    .unwrap();
    assert_eq!(member.client.to_string(), "DEV/COM/222");
    assert_eq!(
        member.id.as_deref(),
        Some("fa2e18a5-c2cb-4d09-b994-f57727f7c3fb")
    );
    assert_eq!(
        (member.user_id.as_deref(), member.issue.as_deref()),
        (Some("EE12345678901"), Some("MT324223MSD"))
    );
}

#[test]
fn bad_targets_are_refused_with_their_reason() {
    assert_eq!(parse_target("/r2/EE/GOV/1/ehr/x"), Err(RequestError::NotR1));
    assert_eq!(
        parse_target("/rest/EE/GOV/1/ehr/x"),
        Err(RequestError::NotR1)
    );
    assert!(matches!(
        parse_target("/r1/EE/GOV/1/ehr"),
        Err(RequestError::InvalidService(_))
    ));
    assert!(matches!(
        parse_target("/r1/EE/GOV//ehr/x"),
        Err(RequestError::InvalidService(_))
    ));
    assert!(matches!(
        parse_target("/r1/EE/GOV/1/ehr/%FF"),
        Err(RequestError::InvalidService(_))
    ));
    for traversal in [
        "/r1/EE/GOV/1/ehr/x/../admin",
        "/r1/EE/GOV/1/ehr/x/%2e%2E/admin",
        "/r1/EE/GOV/1/ehr/x/.",
        "/r1/EE/GOV/1/ehr/x/allowed/..%2Fsecret",
        "/r1/EE/GOV/1/ehr/x/allowed/..%2fsecret",
        "/r1/EE/GOV/1/ehr/x/allowed/%2E%2E%5Csecret",
        "/r1/EE/GOV/1/ehr/x/a%5C..",
        "/r1/EE/GOV/1/ehr/x/a%2F.%2Fb",
        "/r1/EE/GOV/1/ehr/x/a%00b",
        "/r1/EE/GOV/1/ehr/x/a%0Ab",
        "/r1/EE/GOV/1/ehr/x/a//b",
        "/r1/EE/GOV/1/ehr/x/a%C0%AE",
    ] {
        assert!(
            matches!(parse_target(traversal), Err(RequestError::InvalidPath(_))),
            "{traversal}"
        );
    }
    let long = format!("/r1/EE/GOV/1/ehr/x?{}", "q".repeat(MAX_TARGET_LEN));
    assert!(matches!(
        parse_target(&long),
        Err(RequestError::TargetTooLong(_))
    ));
}

#[test]
fn one_path_rule_decodes_once_and_re_encodes_one_way() {
    // PR-REST: an encoded slash inside a segment passes as it was sent.
    assert_eq!(normalize_path("/c%2Fd").unwrap(), "/c%2Fd");
    assert_eq!(normalize_path("/a%5Cb").unwrap(), "/a%5Cb");
    // Equivalent spellings become one; what stays encoded is encoded the one way.
    assert_eq!(
        normalize_path("/%50atient/%34711").unwrap(),
        "/Patient/4711"
    );
    assert_eq!(
        normalize_path("/a%20b/%e2%82%ac/%25").unwrap(),
        "/a%20b/%E2%82%AC/%25"
    );
    assert_eq!(
        normalize_path("/Patient/4711/$everything").unwrap(),
        "/Patient/4711/$everything"
    );
    // One trailing empty segment, and no path at all.
    assert_eq!(normalize_path("/a/").unwrap(), "/a/");
    assert_eq!(normalize_path("/").unwrap(), "/");
    assert_eq!(normalize_path("").unwrap(), "");
    // A path must start with '/': nothing can be glued onto the base path's last segment.
    assert!(matches!(
        normalize_path("-admin/MedicationRequest"),
        Err(RequestError::InvalidPath(_))
    ));
    // Normalising twice changes nothing.
    for path in ["/c%2Fd", "/a%20b/%E2%82%AC/%25", "/x/"] {
        assert_eq!(
            normalize_path(&normalize_path(path).unwrap()).unwrap(),
            normalize_path(path).unwrap()
        );
    }
}

#[test]
fn bad_headers_are_refused_with_their_own_error() {
    assert_eq!(
        parse_headers(&HeaderMap::new()),
        Err(RequestError::MissingClient)
    );
    assert!(matches!(
        parse_headers(&headers(&[("X-Road-Client", "EE/GOV")])),
        Err(RequestError::InvalidClient(_))
    ));
    let twice = headers(&[("X-Road-Client", "EE/GOV/1"), ("X-Road-Client", "EE/GOV/2")]);
    assert!(matches!(
        parse_headers(&twice),
        Err(RequestError::InvalidHeader {
            name: "X-Road-Client",
            ..
        })
    ));
    let long = headers(&[
        ("X-Road-Client", "EE/GOV/1"),
        ("X-Road-Issue", &"i".repeat(MAX_HEADER_VALUE_LEN + 1)),
    ]);
    assert!(matches!(
        parse_headers(&long),
        Err(RequestError::InvalidHeader {
            name: "X-Road-Issue",
            ..
        })
    ));
    let purpose = headers(&[
        ("X-Road-Client", "EE/GOV/1"),
        ("X-Backbone-Purpose-Of-Use", "CURIOSITY"),
    ]);
    assert!(matches!(
        parse_headers(&purpose),
        Err(RequestError::InvalidHeader {
            name: "X-Backbone-Purpose-Of-Use",
            ..
        })
    ));
    let subject = headers(&[
        ("X-Road-Client", "EE/GOV/1"),
        ("X-Backbone-Data-Subject", "EE38001085719"),
    ]);
    assert!(matches!(
        parse_headers(&subject),
        Err(RequestError::InvalidHeader {
            name: "X-Backbone-Data-Subject",
            ..
        })
    ));
    // Each maps to its protocol error type.
    assert_eq!(
        RequestError::MissingClient.fault("id").kind(),
        "Client.InvalidClientIdentifier"
    );
    assert_eq!(RequestError::NotR1.fault("id").kind(), "Client.BadRequest");
}

#[test]
fn health_context_is_required_and_checked() {
    let plain = parse_headers(&headers(&[("X-Road-Client", "EE/GOV/70000001/ehr")])).unwrap();
    let missing = plain.health_context().unwrap_err();
    assert!(missing.to_string().contains("X-Backbone-Data-Subject"));
    assert_eq!(missing.fault("id").kind(), "Client.MissingHealthContext");
    let full = parse_headers(&headers(&[
        ("X-Road-Client", "EE/GOV/70000001/ehr"),
        ("X-Backbone-Data-Subject", "EE38001085718"),
        ("X-Backbone-Purpose-Of-Use", "ETREAT"),
    ]))
    .unwrap();
    let (subject, purpose) = full.health_context().unwrap();
    assert_eq!(
        (subject.as_str(), purpose.as_str(), purpose.is_emergency()),
        ("EE38001085718", "ETREAT", true)
    );
    assert!(!"TREAT".parse::<PurposeOfUse>().unwrap().is_emergency());
    // Other countries: the shape only.
    assert!("LV120389-12345".parse::<DataSubject>().is_ok());
    for bad in [
        "",
        "E",
        "ee38001085718",
        "EE3800108571",
        "EE",
        "FI 123",
        "EE4900101000",
    ] {
        assert!(bad.parse::<DataSubject>().is_err(), "{bad}");
    }
    // Known-good Estonian codes (check digits by both weight sets).
    for good in ["EE38001085718", "EE49002124277", "EE37605030299"] {
        assert!(good.parse::<DataSubject>().is_ok(), "{good}");
    }
}

#[test]
fn hop_by_hop_and_protocol_headers_are_filtered() {
    let map = headers(&[
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Host", "gw.example"),
        ("User-Agent", "curl"),
        ("X-Road-Client", "EE/GOV/1"),
        ("X-Road-Request-Hash", "forged"),
        ("X-Backbone-Data-Subject", "EE38001085718"),
        ("Content-Type", "application/fhir+json"),
        ("Accept", "application/json"),
        ("Cache-Control", "no-cache"),
        ("X-Powered-By", "PHP/5.2.17"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("X-Road-Security-Server", "EE/GOV/1/gw"),
        ("X-Road-Error", "Server.ServerProxy.AccessDenied"),
        ("X-Backbone-Purpose-Of-Use", "TREAT"),
        // PR-REST §4.3: extension headers, user-defined headers and Authorization pass.
        ("X-Road-Custom-Extension", "1"),
        ("Authorization", "Bearer abc"),
    ]);
    let kept: Vec<String> = end_to_end_headers(&map)
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(
        kept,
        [
            "content-type",
            "accept",
            "cache-control",
            "x-powered-by",
            "traceparent",
            "x-road-custom-extension",
            "authorization"
        ]
    );
    for reserved in [
        "x-road-client",
        "x-road-userid",
        "x-road-request-hash",
        "x-backbone-anything",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
    ] {
        assert!(is_reserved(reserved), "{reserved}");
    }
    for passing in ["x-road-custom-extension", "authorization", "accept"] {
        assert!(!is_reserved(passing), "{passing}");
    }
}

#[test]
fn message_ids_are_version_4_uuids() {
    let a = new_message_id();
    let b = new_message_id();
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(a.as_bytes()[14], b'4');
    assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
}
