//! Every preset in `configs/` parses, validates, and names a dataset the registry knows.

use seqrec_train::TrainConfig;

#[test]
fn every_preset_in_configs_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg =
                TrainConfig::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // The file name starts with the model's name and the run directory is named after it.
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(stem.starts_with(cfg.model.name()), "{stem}");
            assert_eq!(cfg.out, std::path::Path::new("runs").join(&stem));
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} presets in {}", dir.display());
}
