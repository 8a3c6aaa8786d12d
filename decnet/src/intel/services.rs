//! Port -> service name, so journal records say `ssh` rather than `22`. A fixed table of the
//! ports attackers probe most (IANA names where they exist); anything else is `<proto>/<port>`.

/// Service name for a destination port, `None` when the port is not in the table.
pub(crate) fn service_name(proto: u8, port: u16) -> Option<&'static str> {
    let tcp = proto == 6;
    let udp = proto == 17;
    Some(match (port, tcp, udp) {
        (7, _, _) => "echo",
        (21, true, _) => "ftp",
        (22, true, _) => "ssh",
        (23, true, _) => "telnet",
        (25, true, _) => "smtp",
        (53, _, _) => "dns",
        (67, _, true) | (68, _, true) => "dhcp",
        (69, _, true) => "tftp",
        (80, true, _) => "http",
        (88, _, _) => "kerberos",
        (110, true, _) => "pop3",
        (111, _, _) => "rpcbind",
        (119, true, _) => "nntp",
        (123, _, true) => "ntp",
        (135, _, _) => "msrpc",
        (137, _, true) => "netbios-ns",
        (138, _, true) => "netbios-dgm",
        (139, true, _) => "netbios-ssn",
        (143, true, _) => "imap",
        (161, _, true) => "snmp",
        (162, _, true) => "snmptrap",
        (179, true, _) => "bgp",
        (389, _, _) => "ldap",
        (443, true, _) => "https",
        (443, _, true) => "quic",
        (445, true, _) => "smb",
        (465, true, _) => "smtps",
        (500, _, true) => "isakmp",
        (502, true, _) => "modbus",
        (514, _, true) => "syslog",
        (515, true, _) => "printer",
        (587, true, _) => "submission",
        (623, _, true) => "ipmi",
        (631, _, _) => "ipp",
        (636, true, _) => "ldaps",
        (873, true, _) => "rsync",
        (993, true, _) => "imaps",
        (995, true, _) => "pop3s",
        (1080, true, _) => "socks",
        (1433, true, _) => "mssql",
        (1521, true, _) => "oracle",
        (1723, true, _) => "pptp",
        (1883, true, _) => "mqtt",
        (1900, _, true) => "ssdp",
        (2049, _, _) => "nfs",
        (2323, true, _) => "telnet-alt",
        (2375, true, _) => "docker",
        (3306, true, _) => "mysql",
        (3389, true, _) => "rdp",
        (5060, _, _) => "sip",
        (5353, _, true) => "mdns",
        (5432, true, _) => "postgresql",
        (5900, true, _) => "vnc",
        (5985, true, _) => "winrm",
        (6379, true, _) => "redis",
        (6443, true, _) => "kubernetes",
        (8080, true, _) => "http-alt",
        (8443, true, _) => "https-alt",
        (9200, true, _) => "elasticsearch",
        (11211, _, _) => "memcached",
        (20000, true, _) => "dnp3",
        (27017, true, _) => "mongodb",
        (47808, _, true) => "bacnet",
        _ => return None,
    })
}

/// Name of an IP protocol number for journal fields.
pub(crate) fn proto_name(proto: u8) -> &'static str {
    match proto {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        132 => "sctp",
        47 => "gre",
        _ => "ip",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_depend_on_protocol() {
        assert_eq!(service_name(6, 22), Some("ssh"));
        assert_eq!(service_name(17, 22), None);
        assert_eq!(service_name(17, 161), Some("snmp"));
        assert_eq!(service_name(6, 443), Some("https"));
        assert_eq!(service_name(17, 443), Some("quic"));
        assert_eq!(service_name(6, 40000), None);
    }
}
