//! The images the test kubelet runs (`tests/images/build.sh`, `src/kubelet/images.rs`):
//! built from this workspace's binaries, written as OCI layouts and unpacked, they resolve
//! by every tag, carry exactly what their binary needs (its libraries, `/etc/passwd` with the
//! nonroot user) and configure that user and the binary as the entrypoint; the binary runs
//! from the unpacked root as 65532 with nothing of the host, and the toolbox has its shell,
//! python3 and redis-cli.
//!
//! Needs root (buildah's storage, the layers' ownership, chroot) and buildah and mmdebstrap:
//! `apt-get install -y buildah mmdebstrap`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use tidecache_e2e::kubelet::{IMAGE_BINARIES, Images, TOOLBOX};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `images::EXTRA_TAGS`.
const NEXT_PATCH: &str = "0.1.1";

fn require_tools() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root: buildah's storage, the layers' ownership and chroot"
    );
    for tool in ["buildah", "mmdebstrap", "chroot"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: apt-get install -y buildah mmdebstrap"
        );
    }
}

/// Runs `args` in `rootfs` as 65532:65532, with an empty environment but PATH; its stdout.
fn run_in(rootfs: &Path, args: &[&str]) -> String {
    let output = Command::new("chroot")
        .arg("--userspec=65532:65532")
        .arg(rootfs)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .output()
        .expect("running chroot");
    assert!(
        output.status.success(),
        "{args:?} in {} failed ({}): {}{}",
        rootfs.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn passwd_has_nonroot(rootfs: &Path) {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("/etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "no nonroot 65532 in {}/etc/passwd:\n{passwd}",
        rootfs.display()
    );
}

#[test]
fn images_build_unpack_resolve_and_run() {
    require_tools();
    let images = Images::build().expect("building the images");
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = images
        .snapshot(&dir.path().join("images"))
        .expect("unpacking the images");

    for name in IMAGE_BINARIES {
        let image = store
            .resolve(&format!("ghcr.io/tidecache/{name}:{VERSION}"))
            .unwrap_or_else(|e| panic!("{name}:{VERSION}: {e}"));
        let next = store
            .resolve(&format!("ghcr.io/tidecache/{name}:{NEXT_PATCH}"))
            .unwrap_or_else(|e| panic!("{name}:{NEXT_PATCH}: {e}"));
        assert_eq!(image.reference, format!("tidecache/{name}:{VERSION}"));
        assert_eq!(next.reference, format!("tidecache/{name}:{NEXT_PATCH}"));
        assert_eq!(image.digest, next.digest, "{name}: the tags are one image");
        assert_eq!(image.rootfs, next.rootfs, "{name}: one root per digest");
        let by_digest = store
            .resolve(&format!("ghcr.io/tidecache/{name}@{}", image.digest))
            .unwrap_or_else(|e| panic!("{name} by digest: {e}"));
        assert_eq!(by_digest.digest, image.digest);

        let binary = image.rootfs.join("usr/local/bin").join(name);
        let mode = std::fs::metadata(&binary)
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{} is not executable", binary.display());
        passwd_has_nonroot(&image.rootfs);
        assert_eq!(image.user.as_deref(), Some("65532:65532"), "{name}");
        assert_eq!(
            image.entrypoint,
            vec![format!("/usr/local/bin/{name}")],
            "{name}"
        );
        assert!(image.cmd.is_empty(), "{name}: {:?}", image.cmd);
        assert_eq!(image.working_dir.as_deref(), Some("/"), "{name}");
        assert!(
            image.env.iter().any(|e| e.starts_with("PATH=")),
            "{name}: {:?}",
            image.env
        );
        // Only what the image holds: a missing library fails here.
        let version = run_in(
            &image.rootfs,
            &[&format!("/usr/local/bin/{name}"), "--version"],
        );
        assert!(version.contains(VERSION), "{name} --version: {version}");
    }

    let toolbox = store.resolve(TOOLBOX).expect("the toolbox");
    assert_eq!(toolbox.reference, TOOLBOX);
    assert_eq!(toolbox.user.as_deref(), Some("65532:65532"));
    assert!(toolbox.entrypoint.is_empty(), "{:?}", toolbox.entrypoint);
    assert_eq!(toolbox.cmd, vec!["/bin/sh".to_owned()]);
    passwd_has_nonroot(&toolbox.rootfs);
    let out = run_in(
        &toolbox.rootfs,
        &[
            "/bin/sh",
            "-c",
            "id -u && python3 -c 'print(6 * 7)' && redis-cli --version && command -v ps ip capsh",
        ],
    );
    assert!(out.starts_with("65532\n42\nredis-cli "), "{out}");

    let missing = store
        .resolve("ghcr.io/tidecache/cache-node:9.9.9")
        .expect_err("an unknown tag");
    assert!(
        missing.contains("\"ghcr.io/tidecache/cache-node:9.9.9\" not found")
            && missing.contains(&format!("cache-node:{{{VERSION},{NEXT_PATCH}}}"))
            && missing.contains("toolbox:latest"),
        "{missing}"
    );
    let unknown = store
        .resolve("docker.io/library/nginx:1.27")
        .expect_err("an image not built here");
    assert!(unknown.contains("janitor:"), "{unknown}");
}
