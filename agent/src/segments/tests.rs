use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn filter(segs: &[(&str, MatchMode, bool)]) -> SegmentIndex {
    SegmentIndex::new(
        segs.iter()
            .map(|(s, m, d)| (net(s), MatchRule::new(*m, *d), ())),
    )
}

#[test]
fn exact_mode_matches_only_the_prefix() {
    let f = filter(&[
        ("10.1.0.0/16", MatchMode::Exact, false),
        ("2001:db8::/32", MatchMode::Exact, false),
    ]);
    assert!(f.matches(&net("10.1.0.0/16")));
    assert!(!f.matches(&net("10.0.0.0/8")));
    assert!(!f.matches(&net("10.1.0.0/24")));
    assert!(!f.matches(&net("0.0.0.0/0")));
    assert!(f.matches(&net("2001:db8::/32")));
    assert!(!f.matches(&net("2001:db8::/48")));
    assert!(!f.matches(&net("2001::/16")));
}

#[test]
fn covering_mode_matches_containing_prefixes() {
    let f = filter(&[
        ("10.0.0.0/8", MatchMode::Covering, false),
        ("10.0.5.0/24", MatchMode::Covering, false),
        ("192.168.7.128/25", MatchMode::Covering, false),
    ]);
    // Contains 10.0.5.0/24 but not 10.0.0.0/8.
    assert!(f.matches(&net("10.0.0.0/16")));
    assert!(f.matches(&net("10.0.5.0/24")));
    assert!(f.matches(&net("10.0.4.0/23")));
    assert!(f.matches(&net("8.0.0.0/5")));
    assert!(!f.matches(&net("10.0.6.0/24")));
    assert!(!f.matches(&net("10.0.5.0/25")));
    assert!(f.matches(&net("192.168.0.0/16")));
    assert!(f.matches(&net("192.168.7.128/25")));
    assert!(!f.matches(&net("192.168.7.0/25")));
    assert!(!f.matches(&net("11.0.0.0/8")));
    // The default route only with allow_default.
    assert!(!f.matches(&net("0.0.0.0/0")));
    let g = filter(&[("10.0.0.0/8", MatchMode::Covering, true)]);
    assert!(g.matches(&net("0.0.0.0/0")));
    assert!(!g.matches(&net("::/0")));
}

#[test]
fn covering_v6() {
    let f = filter(&[("2001:db8:1::/48", MatchMode::Covering, true)]);
    assert!(f.matches(&net("2001:db8::/32")));
    assert!(f.matches(&net("2001:db8:1::/48")));
    assert!(!f.matches(&net("2001:db8:2::/48")));
    assert!(f.matches(&net("::/0")));
    assert!(!f.matches(&net("0.0.0.0/0")));
}

#[test]
fn exact_default_route_segment() {
    let f = filter(&[("0.0.0.0/0", MatchMode::Exact, false)]);
    assert!(f.matches(&net("0.0.0.0/0")));
    assert!(!f.matches(&net("10.0.0.0/8")));
}

#[test]
fn route_prefixes_most_specific_first() {
    let seg = net("10.20.0.0/16");
    let exact: Vec<_> = MatchRule::new(MatchMode::Exact, true)
        .route_prefixes(seg)
        .collect();
    assert_eq!(exact, vec![seg]);
    let covering: Vec<_> = MatchRule::new(MatchMode::Covering, false)
        .route_prefixes(seg)
        .collect();
    assert_eq!(covering.len(), 16);
    assert_eq!(covering.first(), Some(&seg));
    assert_eq!(covering.last(), Some(&net("0.0.0.0/1")));
    let with_default: Vec<_> = MatchRule::new(MatchMode::Covering, true)
        .route_prefixes(seg)
        .collect();
    assert_eq!(with_default.last(), Some(&net("0.0.0.0/0")));
}

/// The rule itself, written the obvious way.
fn brute_match(rule: MatchRule, route: &IpNet, segment: &IpNet) -> bool {
    match rule.mode {
        MatchMode::Exact => route == segment,
        MatchMode::Covering => {
            route.contains(segment) && (route.prefix_len() > 0 || rule.allow_default)
        }
    }
}

#[test]
fn agrees_with_brute_force() {
    // Deterministic pseudo-random segments and routes in 10.0.0.0/8.
    let mut x: u32 = 12345;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut segs = Vec::new();
    for _ in 0..300 {
        let len = (rnd() % 17 + 8) as u8;
        let addr = 0x0a00_0000 | (rnd() & 0x00ff_ffff);
        let n = IpNet::new(std::net::Ipv4Addr::from(addr).into(), len)
            .unwrap()
            .trunc();
        segs.push((n, MatchMode::Covering, false));
    }
    let v: Vec<_> = segs
        .iter()
        .map(|(s, m, d)| (*s, MatchRule::new(*m, *d), ()))
        .collect();
    let f = SegmentIndex::new(v);
    for _ in 0..20000 {
        let len = (rnd() % 25) as u8 + 1;
        let addr = 0x0a00_0000 | (rnd() & 0x00ff_ffff);
        let r = IpNet::new(std::net::Ipv4Addr::from(addr).into(), len)
            .unwrap()
            .trunc();
        let brute = segs.iter().any(|(s, _, _)| r.contains(s));
        assert_eq!(f.matches(&r), brute, "route {r}");
    }
}

#[test]
fn engine_queries_agree_with_brute_force() {
    // Mixed modes, both families, duplicates and default routes: which
    // segments each route matches, and which routes each segment accepts.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut random_net = |v6: bool, max_len: u64| {
        let len = (rnd() % (max_len + 1)) as u8;
        if v6 {
            let addr = (0x2001_0db8u128 << 96) | u128::from(rnd() & 0xffff_ffff) << 64;
            let len = len.saturating_add(24).min(128);
            IpNet::new(std::net::Ipv6Addr::from(addr).into(), len)
        } else {
            let addr = 0x0a00_0000 | (rnd() as u32 & 0x00ff_ffff);
            IpNet::new(std::net::Ipv4Addr::from(addr).into(), len)
        }
        .unwrap()
        .trunc()
    };
    let mut segs: Vec<(IpNet, MatchRule, usize)> = Vec::new();
    for i in 0..400 {
        let seg = if i % 37 == 0 {
            net("0.0.0.0/0")
        } else {
            random_net(i % 3 == 0, 24)
        };
        let mode = if i % 2 == 0 {
            MatchMode::Exact
        } else {
            MatchMode::Covering
        };
        let rule = MatchRule::new(mode, i % 5 == 0);
        segs.push((seg, rule, i));
        if i % 11 == 0 {
            // The same segment in another group.
            segs.push((
                seg,
                MatchRule::new(MatchMode::Covering, i % 4 == 0),
                i + 1000,
            ));
        }
    }
    let index = SegmentIndex::new(segs.iter().copied());
    let mut routes: Vec<IpNet> = segs.iter().map(|(s, _, _)| *s).collect();
    routes.extend([net("0.0.0.0/0"), net("::/0"), net("2001:db8::/32")]);
    for i in 0..2000 {
        routes.push(random_net(i % 3 == 0, 24));
    }
    for r in &routes {
        let mut got: Vec<usize> = index.matching(r).collect();
        got.sort_unstable();
        let mut want: Vec<usize> = segs
            .iter()
            .filter(|(s, rule, _)| brute_match(*rule, r, s))
            .map(|(_, _, v)| *v)
            .collect();
        want.sort_unstable();
        assert_eq!(got, want, "route {r}");
        assert_eq!(index.matches(r), !want.is_empty(), "route {r}");
    }
    for (s, rule, _) in &segs {
        let accepted: Vec<IpNet> = rule.route_prefixes(*s).collect();
        for r in &routes {
            assert_eq!(
                accepted.contains(r),
                brute_match(*rule, r, s),
                "segment {s} {rule:?} route {r}"
            );
        }
    }
}
