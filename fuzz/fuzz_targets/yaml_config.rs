//! The YAML config reader with its validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodelocal_dns::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_yaml(text, "config.yaml") {
        // A valid config written back out reads again (check-config and translate rely on it).
        let again =
            Config::from_yaml(&config.to_yaml(), "again").expect("written config reads back");
        assert_eq!(again.to_yaml(), config.to_yaml());
    }
});
