//! Forwarding, which the kernel needs on for what the programs do
//! (`bpf_fib_lookup` fails with "forwarding disabled", TC steering is
//! dropped): the agent does not change sysctls, it says which to set.

use ipnet::IpNet;

fn sysctl_is_on(path: &str) -> Option<bool> {
    std::fs::read_to_string(path).ok().map(|s| s.trim() != "0")
}

/// Warns when forwarding is off globally: the fib lookup of the XDP program
/// then fails with "forwarding disabled" and TC steering is dropped by the kernel.
pub(super) fn warn_forwarding_global() {
    if sysctl_is_on(&crate::paths::forwarding_sysctl("ipv4", "all")) == Some(false) {
        tracing::warn!(
            "net.ipv4.conf.all.forwarding is 0: steering to a backup needs forwarding \
             (sysctl -w net.ipv4.conf.all.forwarding=1)"
        );
    }
    if sysctl_is_on(&crate::paths::forwarding_sysctl("ipv6", "all")) == Some(false) {
        tracing::warn!(
            "net.ipv6.conf.all.forwarding is 0: IPv6 steering to a backup needs forwarding \
             (sysctl -w net.ipv6.conf.all.forwarding=1)"
        );
    }
}

/// Warns when forwarding is off on the backup a steer entry of `prefix`
/// sends to, or when that backup does not exist.
pub(super) fn warn_backup_forwarding(ifindex: u32, prefix: &IpNet) {
    let Some(name) = ifname_of(ifindex) else {
        tracing::warn!("segment {prefix}: backup interface index {ifindex} does not exist");
        return;
    };
    let fam = if prefix.addr().is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    };
    let path = crate::paths::forwarding_sysctl(fam, &name);
    if sysctl_is_on(&path) == Some(false) {
        tracing::warn!(
            "segment {prefix}: forwarding is off on backup {name}: steering fails until \
             `sysctl -w net.{fam}.conf.{name}.forwarding=1` (or conf.all)"
        );
    }
}

fn ifname_of(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf.get(..end)?.to_vec()).ok()
}
