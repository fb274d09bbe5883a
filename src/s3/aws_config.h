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
  std::string profile;            ///< The profile consulted (AWS_PROFILE or "default").
  /// Where the credentials came from ("environment", "~/.aws/credentials [dev]", ...), for
  /// messages; empty if none were found.
  std::string credentials_source;
};

/// Reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
/// AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_PROFILE,
/// AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE, and the two files they name (missing files
/// are fine). Throws CheckpointError naming the file and line if a file cannot be parsed, or the
/// variable if an endpoint is not an http(s) URL.
AwsConfig load_aws_config();

}  // namespace ckpt::detail
