#include "storage/s3/s3_xml.h"

#include <ckpt/checkpoint_error.h>

#include <pugixml.hpp>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <sstream>

namespace ckpt::detail {
namespace {

pugi::xml_document parse(const std::string& xml, const std::string& what, const char* root) {
  pugi::xml_document document;
  const pugi::xml_parse_result result = document.load_buffer(xml.data(), xml.size());
  if (!result || !document.child(root)) {
    throw CheckpointError(what + ": the store's answer is not the expected <" + root +
                              "> document (" +
                              (result ? "root <" + std::string(document.first_child().name()) + ">"
                                      : std::string(result.description())) +
                              ")",
                          {}, EIO);
  }
  return document;
}

bool is_true(const pugi::xml_node& node) { return std::string(node.child_value()) == "true"; }

}  // namespace

S3ErrorBody parse_error_body(const std::string& xml) {
  pugi::xml_document document;
  if (xml.empty() || !document.load_buffer(xml.data(), xml.size())) return {};
  const pugi::xml_node error = document.child("Error");
  if (!error) return {};
  return {error.child_value("Code"), error.child_value("Message")};
}

ObjectListing parse_list_objects(const std::string& xml, const std::string& what) {
  const auto document = parse(xml, what, "ListBucketResult");
  const pugi::xml_node root = document.child("ListBucketResult");
  ObjectListing listing;
  for (const pugi::xml_node& contents : root.children("Contents")) {
    ObjectListing::Object object;
    object.key = contents.child_value("Key");
    object.size = std::strtoull(contents.child_value("Size"), nullptr, 10);
    object.mtime_ns = parse_iso8601_ns(contents.child_value("LastModified"));
    listing.objects.push_back(std::move(object));
  }
  for (const pugi::xml_node& prefix : root.children("CommonPrefixes")) {
    listing.common_prefixes.emplace_back(prefix.child_value("Prefix"));
  }
  listing.truncated = is_true(root.child("IsTruncated"));
  listing.next_continuation_token = root.child_value("NextContinuationToken");
  if (listing.truncated && listing.next_continuation_token.empty()) {
    throw CheckpointError(what + ": the listing is truncated but has no NextContinuationToken", {},
                          EIO);
  }
  return listing;
}

std::string parse_upload_id(const std::string& xml, const std::string& what) {
  const auto document = parse(xml, what, "InitiateMultipartUploadResult");
  const std::string id = document.child("InitiateMultipartUploadResult").child_value("UploadId");
  if (id.empty()) throw CheckpointError(what + ": the store's answer has no UploadId", {}, EIO);
  return id;
}

UploadListing parse_list_uploads(const std::string& xml, const std::string& what) {
  const auto document = parse(xml, what, "ListMultipartUploadsResult");
  const pugi::xml_node root = document.child("ListMultipartUploadsResult");
  UploadListing listing;
  for (const pugi::xml_node& upload : root.children("Upload")) {
    listing.uploads.push_back({upload.child_value("Key"), upload.child_value("UploadId")});
  }
  listing.truncated = is_true(root.child("IsTruncated"));
  listing.next_key_marker = root.child_value("NextKeyMarker");
  listing.next_upload_id_marker = root.child_value("NextUploadIdMarker");
  return listing;
}

std::string complete_multipart_body(const std::vector<std::string>& etags) {
  pugi::xml_document document;
  pugi::xml_node root = document.append_child("CompleteMultipartUpload");
  root.append_attribute("xmlns") = "http://s3.amazonaws.com/doc/2006-03-01/";
  for (std::size_t i = 0; i < etags.size(); ++i) {
    pugi::xml_node part = root.append_child("Part");
    part.append_child("PartNumber").text().set(static_cast<unsigned long long>(i + 1));
    part.append_child("ETag").text().set(etags[i].c_str());
  }
  std::ostringstream out;
  document.save(out, "", pugi::format_raw);
  return out.str();
}

S3ErrorBody parse_complete_result(const std::string& xml, const std::string& what) {
  pugi::xml_document document;
  if (!document.load_buffer(xml.data(), xml.size())) {
    throw CheckpointError(what + ": the store's answer is not XML", {}, EIO);
  }
  if (document.child("CompleteMultipartUploadResult")) return {};
  if (const pugi::xml_node error = document.child("Error")) {
    S3ErrorBody body{error.child_value("Code"), error.child_value("Message")};
    if (body.code.empty()) body.code = "InternalError";
    return body;
  }
  throw CheckpointError(what + ": the store's answer is neither a result nor an error", {}, EIO);
}

int64_t parse_iso8601_ns(const std::string& text) {
  std::tm tm{};
  int millis = 0;
  char zone = 0;
  const int fields =
      std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &millis, &zone);
  if (fields < 6) return 0;
  if (fields < 7) millis = 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  const std::time_t seconds = timegm(&tm);
  if (seconds == static_cast<std::time_t>(-1)) return 0;
  return static_cast<int64_t>(seconds) * 1000000000 + static_cast<int64_t>(millis) * 1000000;
}

}  // namespace ckpt::detail
