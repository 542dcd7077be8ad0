//! Conda platforms (`linux-64`, `osx-arm64`, …) and their OCI `os`/`architecture`.

/// The conda platform of the machine envoci runs on.
pub fn host_platform() -> &'static str {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "linux-64",
        ("linux", "aarch64") => "linux-aarch64",
        ("linux", "powerpc64") => "linux-ppc64le",
        ("macos", "x86_64") => "osx-64",
        ("macos", "aarch64") => "osx-arm64",
        ("windows", "x86_64") => "win-64",
        ("windows", "aarch64") => "win-arm64",
        _ => "noarch",
    }
}

/// OCI `os`/`architecture` of a conda platform (`unknown` for what has none).
pub fn oci_platform(conda: &str) -> (&'static str, &'static str) {
    let (os, arch) = conda.split_once('-').unwrap_or((conda, ""));
    let os = match os {
        "osx" => "darwin",
        "win" => "windows",
        "linux" => "linux",
        _ => "unknown",
    };
    let arch = match arch {
        "64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "32" => "386",
        "armv7l" => "arm",
        _ => "unknown",
    };
    (os, arch)
}

#[cfg(test)]
mod tests {
    use super::oci_platform;

    #[test]
    fn conda_platforms_map_to_oci_ones() {
        assert_eq!(oci_platform("linux-64"), ("linux", "amd64"));
        assert_eq!(oci_platform("linux-aarch64"), ("linux", "arm64"));
        assert_eq!(oci_platform("osx-arm64"), ("darwin", "arm64"));
        assert_eq!(oci_platform("win-64"), ("windows", "amd64"));
        assert_eq!(oci_platform("linux-32"), ("linux", "386"));
        assert_eq!(oci_platform("noarch"), ("unknown", "unknown"));
    }
}
