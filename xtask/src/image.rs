pub(crate) fn build_image(_force: bool) -> Result<String, String> {
    Err("the image task is not built yet".to_owned())
}
