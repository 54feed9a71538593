Rails.application.configure do
  config.cache_classes = true
  config.eager_load = true
  config.log_level = :info
  if ENV["RAILS_LOG_TO_STDOUT"].present?
    config.logger = ActiveSupport::Logger.new(STDOUT)
  end

  # Do not dump schema after migrations.
  config.active_record.dump_schema_after_migration = false
end
