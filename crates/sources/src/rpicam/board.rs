//! Which Raspberry Pi this is, as far as the camera app's encoder is concerned: a
//! Pi 5 (and the Pi 500 and Compute Module 5, the same BCM2712 chip) has no hardware
//! H.264 encoder, so rpicam-vid encodes with libx264 on the CPU there.
use std::path::PathBuf;

/// Environment variable naming the file to read the board's model from instead of
/// the device tree's (tests, containers that mount the device tree elsewhere).
pub const MODEL_PATH_ENV: &str = "NALCAST_DEVICE_MODEL_PATH";

/// Where the kernel shows the device tree's `model` property, in order.
const MODEL_PATHS: [&str; 2] = [
    "/proc/device-tree/model",
    "/sys/firmware/devicetree/base/model",
];

/// The board's model string ("Raspberry Pi 4 Model B Rev 1.4"), if there is one
/// to read: `$NALCAST_DEVICE_MODEL_PATH`, else the device tree's.
pub fn read_model() -> Option<String> {
    let paths: Vec<PathBuf> = match std::env::var_os(MODEL_PATH_ENV) {
        Some(path) => vec![PathBuf::from(path)],
        None => MODEL_PATHS.iter().map(PathBuf::from).collect(),
    };
    read_model_at(&paths)
}

/// The model string in the first of `paths` that holds one.
fn read_model_at(paths: &[PathBuf]) -> Option<String> {
    paths.iter().find_map(|path| {
        let raw = std::fs::read(path).ok()?;
        // The property is a NUL-terminated string.
        let model = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\0', '\n', ' '])
            .to_owned();
        (!model.is_empty()).then_some(model)
    })
}

/// Whether a board of this model lacks the hardware H.264 encoder (BCM2712 boards:
/// "Raspberry Pi 5 Model B", "Raspberry Pi 500", "Raspberry Pi Compute Module 5").
pub fn encodes_in_software(model: &str) -> bool {
    model.contains("Raspberry Pi 5") || model.contains("Compute Module 5")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcm2712_boards_encode_in_software_and_older_ones_do_not() {
        for model in [
            "Raspberry Pi 5 Model B Rev 1.0",
            "Raspberry Pi 500 Rev 1.0",
            "Raspberry Pi Compute Module 5 Rev 1.0",
        ] {
            assert!(encodes_in_software(model), "{model}");
        }
        for model in [
            "Raspberry Pi 4 Model B Rev 1.4",
            "Raspberry Pi Zero 2 W Rev 1.0",
            "Raspberry Pi 3 Model B Plus Rev 1.3",
            "Raspberry Pi Compute Module 4 Rev 1.0",
            "Raspberry Pi 400 Rev 1.0",
            "",
        ] {
            assert!(!encodes_in_software(model), "{model}");
        }
    }

    #[test]
    fn the_model_is_read_without_its_terminating_nul() {
        let dir = std::env::temp_dir().join(format!("nalcast-board-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let model = dir.join("model");
        std::fs::write(&model, b"Raspberry Pi 5 Model B Rev 1.0\0").expect("write");
        let missing = dir.join("missing");
        assert_eq!(
            read_model_at(&[missing.clone(), model]).as_deref(),
            Some("Raspberry Pi 5 Model B Rev 1.0")
        );
        assert_eq!(read_model_at(&[missing]), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
