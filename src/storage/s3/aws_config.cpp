#include "storage/s3/aws_config.h"

#include <ckpt/checkpoint_error.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>

namespace ckpt::detail {
namespace {

using Section = std::map<std::string, std::string>;
using IniFile = std::map<std::string, Section>;

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

std::string trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r");
  if (first == std::string::npos) return "";
  const auto last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

// The AWS CLI's INI dialect: `[section]`, `key = value`, comments starting with # or ;, and
// nested settings (`s3 =` followed by indented `key = value` lines), stored here as `s3.key`.
IniFile read_ini(const std::filesystem::path& path) {
  IniFile sections;
  std::ifstream in(path);
  if (!in) return sections;  // a missing file is the common case, not an error
  std::string line;
  std::string section;
  std::string nested;  // the key whose indented sub-settings follow, or empty
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string text = trim(line);
    if (text.empty() || text[0] == '#' || text[0] == ';') continue;
    const bool indented = line[0] == ' ' || line[0] == '\t';
    if (text.front() == '[') {
      if (text.back() != ']') {
        throw CheckpointError("cannot parse AWS configuration " + path.string() + " line " +
                                  std::to_string(number) + ": a section header needs a ']'",
                              path, EINVAL);
      }
      section = trim(text.substr(1, text.size() - 2));
      nested.clear();
      sections[section];
      continue;
    }
    const auto equals = text.find('=');
    if (equals == std::string::npos || section.empty()) {
      throw CheckpointError(
          "cannot parse AWS configuration " + path.string() + " line " + std::to_string(number) +
              (section.empty() ? ": a setting outside any [section]" : ": expected 'name = value'"),
          path, EINVAL);
    }
    const std::string key = trim(text.substr(0, equals));
    const std::string value = trim(text.substr(equals + 1));
    if (indented && !nested.empty()) {
      sections[section][nested + "." + key] = value;
    } else {
      nested = value.empty() ? key : "";
      sections[section][key] = value;
    }
  }
  return sections;
}

std::filesystem::path aws_file(const char* variable, const char* name) {
  const std::string chosen = env(variable);
  if (!chosen.empty()) return chosen;
  const std::string home = env("HOME");
  if (home.empty()) return {};
  return std::filesystem::path(home) / ".aws" / name;
}

std::optional<std::string> lookup(const IniFile& file, const std::string& section,
                                  const std::string& key) {
  const auto found = file.find(section);
  if (found == file.end()) return std::nullopt;
  const auto value = found->second.find(key);
  if (value == found->second.end() || value->second.empty()) return std::nullopt;
  return value->second;
}

std::string normalised_endpoint(std::string url, const char* source) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
    throw CheckpointError(
        std::string("invalid ") + source + " '" + url + "': expected an http:// or https:// URL",
        {}, EINVAL);
  }
  return url;
}

}  // namespace

AwsConfig load_aws_config() {
  AwsConfig config;
  config.profile = env("AWS_PROFILE");
  if (config.profile.empty()) config.profile = "default";
  const auto credentials_path = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
  const auto config_path = aws_file("AWS_CONFIG_FILE", "config");
  const IniFile credentials = credentials_path.empty() ? IniFile{} : read_ini(credentials_path);
  const IniFile settings = config_path.empty() ? IniFile{} : read_ini(config_path);
  // The config file names every profile but the default one `profile NAME`.
  const std::string config_section =
      config.profile == "default" ? "default" : "profile " + config.profile;
  const auto setting = [&](const std::string& key) {
    return lookup(settings, config_section, key);
  };

  if (!env("AWS_ACCESS_KEY_ID").empty() && !env("AWS_SECRET_ACCESS_KEY").empty()) {
    config.access_key_id = env("AWS_ACCESS_KEY_ID");
    config.secret_access_key = env("AWS_SECRET_ACCESS_KEY");
    config.session_token = env("AWS_SESSION_TOKEN");
    config.credentials_source = "environment";
  } else if (const auto key = lookup(credentials, config.profile, "aws_access_key_id")) {
    config.access_key_id = *key;
    config.secret_access_key =
        lookup(credentials, config.profile, "aws_secret_access_key").value_or("");
    config.session_token = lookup(credentials, config.profile, "aws_session_token").value_or("");
    config.credentials_source = credentials_path.string() + " [" + config.profile + "]";
  } else if (const auto key = setting("aws_access_key_id")) {
    config.access_key_id = *key;
    config.secret_access_key = setting("aws_secret_access_key").value_or("");
    config.session_token = setting("aws_session_token").value_or("");
    config.credentials_source = config_path.string() + " [" + config_section + "]";
  }

  config.region = env("AWS_REGION");
  if (config.region.empty()) config.region = env("AWS_DEFAULT_REGION");
  if (config.region.empty()) config.region = setting("region").value_or("us-east-1");

  if (!env("AWS_ENDPOINT_URL_S3").empty()) {
    config.endpoint = normalised_endpoint(env("AWS_ENDPOINT_URL_S3"), "AWS_ENDPOINT_URL_S3");
  } else if (!env("AWS_ENDPOINT_URL").empty()) {
    config.endpoint = normalised_endpoint(env("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL");
  } else if (const auto url = setting("s3.endpoint_url")) {
    config.endpoint =
        normalised_endpoint(*url, ("endpoint_url in " + config_path.string()).c_str());
  } else if (const auto url = setting("endpoint_url")) {
    config.endpoint =
        normalised_endpoint(*url, ("endpoint_url in " + config_path.string()).c_str());
  }
  config.addressing_style = setting("s3.addressing_style").value_or("auto");

  // As the AWS CLI: AWS_CA_BUNDLE, else the profile's ca_bundle.
  if (!env("AWS_CA_BUNDLE").empty()) {
    config.ca_bundle = env("AWS_CA_BUNDLE");
    config.ca_bundle_source = "AWS_CA_BUNDLE";
  } else if (const auto bundle = setting("ca_bundle")) {
    config.ca_bundle = *bundle;
    config.ca_bundle_source = "ca_bundle in " + config_path.string() + " [" + config_section + "]";
  }
  std::error_code error;
  if (!config.ca_bundle.empty() && !std::filesystem::is_regular_file(config.ca_bundle, error)) {
    throw CheckpointError("invalid " + config.ca_bundle_source + " '" + config.ca_bundle +
                              "': no such file (expected the PEM certificates of the CA that "
                              "signed the endpoint's certificate)",
                          config.ca_bundle, ENOENT);
  }
  return config;
}

}  // namespace ckpt::detail
