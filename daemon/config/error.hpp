// A refused config, with the position of what is wrong.
#pragma once

#include <stdexcept>
#include <string>

namespace spliced::config {

// A refused config; what() is "file:line:col: message" (line and column 1-based).
class config_error : public std::runtime_error {
public:
    config_error(std::string file, int line, int column, const std::string& message)
        : std::runtime_error(file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message),
          file_(std::move(file)),
          line_(line),
          column_(column),
          message_(message) {}
    const std::string& file() const { return file_; }
    int line() const { return line_; }
    int column() const { return column_; }
    const std::string& message() const { return message_; }

private:
    std::string file_;
    int line_;
    int column_;
    std::string message_;
};

}  // namespace spliced::config
