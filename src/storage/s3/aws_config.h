#pragma once

#include <string>

namespace ckpt::detail {

/// Who we are and where the store is, resolved the way the AWS CLI and boto3 resolve them: the
/// environment first, then the profile in the shared credentials and config files.
struct AwsConfig {
  std::string access_key_id;
  std::string secret_access_key;  ///< Never logged or put into a message.
  std::string session_token;      ///< Empty unless temporary credentials are used.
  std::string region;             ///< Never empty (default us-east-1).
  std::string endpoint;           ///< `scheme://host[:port]` without a trailing `/`; empty: AWS.
  std::string addressing_style;   ///< From the config file's `s3` section: auto, path, virtual.
  /// PEM file of the certificate authorities an https:// endpoint's certificate must chain to
  /// (a private CA); empty: the system's. Never means "do not verify".
  std::string ca_bundle;
  /// Where `ca_bundle` came from ("AWS_CA_BUNDLE", "ca_bundle in ~/.aws/config [default]"), for
  /// messages; empty if it is not set.
  std::string ca_bundle_source;
  std::string profile;  ///< The profile consulted (AWS_PROFILE or "default").
  /// Where the credentials came from ("environment", "~/.aws/credentials [dev]", ...), for
  /// messages; empty if none were found.
  std::string credentials_source;
};

/// Reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
/// AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_CA_BUNDLE, AWS_PROFILE,
/// AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE, and the two files they name (missing files
/// are fine). Throws CheckpointError naming the file and line if a file cannot be parsed, the
/// variable if an endpoint is not an http(s) URL, or where a CA bundle was named if that file
/// does not exist.
AwsConfig load_aws_config();

}  // namespace ckpt::detail
