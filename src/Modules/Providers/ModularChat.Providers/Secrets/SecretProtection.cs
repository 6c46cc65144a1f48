using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Options;
using Marten;

namespace ModularChat.Providers.Secrets;

internal static class SecretProtection
{
    /// <summary>Data Protection with its key ring in PostgreSQL, each key encrypted with the master key.</summary>
    public static IServiceCollection AddSecretProtection(this IServiceCollection services)
    {
        services.AddValidatedOptions<DataProtectionSettings, DataProtectionSettingsValidator>(DataProtectionSettings.Section);
        services.AddSingleton<IValidateOptions<DataProtectionSettings>, MasterKeyRequired>();
        services.AddDataProtection().SetApplicationName("ModularChat");
        // Data Protection's own key manager, behind one whose cached key ring can be given up (keys made by other nodes).
        services.AddSingleton(sp => new RefreshableKeyManager(ActivatorUtilities.CreateInstance<XmlKeyManager>(sp)));
        services.Replace(ServiceDescriptor.Singleton<IKeyManager>(sp => sp.GetRequiredService<RefreshableKeyManager>()));
        services.AddSingleton<IConfigureOptions<KeyManagementOptions>, KeyRingInPostgres>();
        services.AddSingleton<SecretBox>();
        // Before Data Protection's own start, which loads the key ring and, finding no key it can read, makes one (start
        // checks run before every hosted service starts).
        services.AddStartCheck<KeyRingCheck.AtStart>();
        return services;
    }

    private sealed class KeyRingInPostgres(IDocumentStore store, IOptions<DataProtectionSettings> settings) : IConfigureOptions<KeyManagementOptions>
    {
        public void Configure(KeyManagementOptions options)
        {
            options.XmlRepository = new PostgresXmlRepository(store);
            options.NewKeyLifetime = settings.Value.KeyLifetime;
            // Without a master key (Development only, enforced at start) keys are stored unencrypted, and Data Protection says so in its log.
            if (settings.Value.MasterKeyBytes() is { } masterKey)
            {
                options.XmlEncryptor = new MasterKeyXmlEncryptor(masterKey);
            }
        }
    }
}
