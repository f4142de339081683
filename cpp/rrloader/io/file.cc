#include "rrloader/io/file.h"

#include <arrow/memory_pool.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rrl::io {

namespace {

// Descriptor: owns one file descriptor (RAII).
class Descriptor {
 public:
  explicit Descriptor(int fd) : fd_(fd) {}
  ~Descriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

class FileSource final : public ByteSource {
 public:
  FileSource(std::string path, int fd, uint64_t size) : path_(std::move(path)), fd_(fd), size_(size) {}

  const std::string& Name() const override { return path_; }
  uint64_t Size() const override { return size_; }

  Result<std::shared_ptr<arrow::Buffer>> ReadAt(uint64_t offset, uint64_t length) const override {
    if (offset > size_ || length > size_ - offset) {
      return Status::Truncated(path_ + ": needs bytes " + std::to_string(offset) + ".." +
                               std::to_string(offset + length) + " but the file has " + std::to_string(size_) +
                               " bytes");
    }
    // glibc's heap rather than Arrow's default pool: see DecompressPayload in rrd/codec.cc.
    auto alloc = arrow::AllocateBuffer(static_cast<int64_t>(length), arrow::system_memory_pool());
    if (!alloc.ok()) {
      return Status::IoError(path_ + ": cannot allocate " + std::to_string(length) + " bytes");
    }
    std::shared_ptr<arrow::Buffer> buf = std::move(alloc).ValueUnsafe();
    auto* dst = buf->mutable_data();
    uint64_t done = 0;
    while (done < length) {
      ssize_t n = ::pread(fd_.get(), dst + done, length - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::IoError(path_ + ": read failed at byte offset " + std::to_string(offset + done) + ": " +
                               std::strerror(errno));
      }
      if (n == 0) {
        return Status::Truncated(path_ + ": file shrank while reading at byte offset " + std::to_string(offset + done));
      }
      done += static_cast<uint64_t>(n);
    }
    return buf;
  }

 private:
  std::string path_;
  Descriptor fd_;
  uint64_t size_;
};

class MemSource final : public ByteSource {
 public:
  MemSource(std::string name, std::shared_ptr<arrow::Buffer> data) : name_(std::move(name)), data_(std::move(data)) {}
  const std::string& Name() const override { return name_; }
  uint64_t Size() const override { return static_cast<uint64_t>(data_->size()); }
  Result<std::shared_ptr<arrow::Buffer>> ReadAt(uint64_t offset, uint64_t length) const override {
    if (offset > Size() || length > Size() - offset) {
      return Status::Truncated(name_ + ": needs bytes " + std::to_string(offset) + ".." +
                               std::to_string(offset + length) + " but has " + std::to_string(Size()));
    }
    return arrow::SliceBuffer(data_, static_cast<int64_t>(offset), static_cast<int64_t>(length));
  }

 private:
  std::string name_;
  std::shared_ptr<arrow::Buffer> data_;
};

}  // namespace

Result<std::shared_ptr<ByteSource>> OpenFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::IoError(path + ": cannot open: " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::IoError(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument(path + ": not a regular file");
  }
  return std::shared_ptr<ByteSource>(std::make_shared<FileSource>(path, fd, static_cast<uint64_t>(st.st_size)));
}

std::shared_ptr<ByteSource> MemorySource(std::string name, std::shared_ptr<arrow::Buffer> data) {
  return std::make_shared<MemSource>(std::move(name), std::move(data));
}

}  // namespace rrl::io
