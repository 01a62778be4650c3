//! The container CLI's flags with a fixed set of values (clap value enums): a bad value keeps
//! Docker's exit code 125, and Docker's other names for a value still parse.

use crate::util::{stderr, Kiln};

#[test]
fn run_with_an_unknown_network_exits_125_and_lists_the_networks() {
    // --network became a clap value enum; a bad value of any flag exits 125, as Docker's.
    let k = Kiln::new();
    for cmd in ["run", "create"] {
        let o = k.run(&[cmd, "--network", "bogus", "busybox:local", "true"]);
        assert_eq!(o.status.code(), Some(125), "{cmd}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("bogus") && err.contains("pasta"), "{err}");
    }
    // So does an unknown flag (clap's own code was 2; see docker_habits_misc.rs).
    let o = k.run(&["run", "--no-such-flag", "busybox:local", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
}

#[test]
fn every_network_name_docker_and_kiln_use_parses() {
    // The image is missing (and never pulled), so each command gets past its flags to the
    // store and fails there, naming the image (a refused flag would name the flag instead),
    // with Docker's code for `create`'s "No such image", 1 (a refused flag is 125).
    let k = Kiln::new();
    for net in ["bridge", "default", "private", "none", "host", "pasta"] {
        let o = k.run(&[
            "create",
            "--pull=never",
            "--network",
            net,
            "no-such-image:1",
            "true",
        ]);
        assert_eq!(o.status.code(), Some(1), "{net}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no-such-image:1"),
            "{net}: {}",
            stderr(&o)
        );
    }
}
