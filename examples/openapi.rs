//! Prints the control API's OpenAPI document (`furymesh::api::openapi_json`) on stdout:
//! `scripts/gen-openapi` writes it to `docs/openapi.json`.

fn main() {
    print!("{}", furymesh::api::openapi_json());
}
